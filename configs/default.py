"""Every field the trainer reads, with its default. Experiment configs start from this one.

Derived values (steps per epoch, total steps, the batch-scaled learning rate) are computed by
train_lib and recorded in <workdir>/config.json, never frozen here.
"""

import ml_collections


def get_config(arg=None) -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Model: `name` picks the registry entry; every other field is passed to its constructor,
  # so experiment configs list the fields they want overridable from the command line.
  config.model = ml_collections.ConfigDict({'name': 'lenet5'})

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'offline_digits'  # or any tfds image classification name
  config.dataset.data_dir = ''  # '' → tfds default (~/tensorflow_datasets or $TFDS_DATA_DIR)
  config.dataset.download = True  # False: fail at once if the data is not prepared
  config.dataset.train_split = ''  # '' → the registry's (e.g. 'train[:90%]' to hold out data)
  config.dataset.eval_split = ''
  # Preprocessing ops (input_pipeline/ops), e.g. "random_crop(28, pad=2)|normalize('mnist')";
  # `decode` goes first unless the string starts with a decoding op.
  config.dataset.train_preprocess = ''
  config.dataset.eval_preprocess = ''  # ten_crop(...) here evaluates on averaged views
  config.dataset.channels = 0  # 3: grey images are repeated into RGB (MNIST into RGB models)
  config.dataset.min_size = 0  # > 0: smaller images are scaled up to this shorter side first
  config.dataset.cache = True  # keep decoded examples in memory (small datasets)
  config.dataset.shuffle_buffer = 16_384  # when not cached; cached splits shuffle fully
  config.dataset.holdout_classes = ()  # metric learning: classes kept out of training entirely

  # 'classification', or 'metric_learning': an embedding (config.model.embedding_dim > 0)
  # trained on pairs, triplets or P×K batches, evaluated by verification, retrieval and N-way
  # K-shot accuracy on classes held out of training (docs/metric_learning.md).
  config.task = 'classification'
  config.metric = ml_collections.ConfigDict()
  config.metric.sampling = 'classes'  # pairs | triplets | classes (P×K batches, for mining)
  config.metric.examples_per_class = 4  # K of P×K; P = batch_size / K
  config.metric.loss = 'triplet'  # contrastive (pairs) | triplet | softmax (the baseline)
  config.metric.mining = 'batch_hard'  # P×K: batch_all | batch_hard | semi_hard; '' otherwise
  config.metric.distance = 'euclidean'  # or 'cosine' (1 − cos)
  config.metric.margin = 0.2
  config.metric.ways = 3  # N-way K-shot evaluation episodes on the held-out classes
  config.metric.shots = 1
  config.metric.queries = 5  # per class and episode
  config.metric.episodes = 1000
  config.metric.recall_at = (1, 2, 4, 8)
  config.metric.verification_pairs = 3000  # same-class and as many different-class eval pairs
  config.metric.projection = 'tsne'  # the embedding picture's 2-D projection: tsne | pca

  config.batch_size = 128  # global, over all devices and processes (pairs, triplets or images)
  config.eval_batch_size = 0  # 0 → batch_size
  config.num_epochs = 10
  config.total_steps = 0  # > 0 overrides num_epochs

  config.loss = 'softmax_xent'  # or 'l2'
  config.label_smoothing = 0.0
  config.aux_loss_weight = 0.3  # auxiliary heads (GoogLeNet, Inception v3)

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'momentum'  # sgd | momentum | nesterov | adam | adamw | rmsprop
  config.optimizer.lr = 0.1
  config.optimizer.lr_reference_batch_size = 0  # > 0: lr × batch_size / this (linear scaling)
  config.optimizer.momentum = 0.9  # momentum/nesterov, and rmsprop's (0 → none)
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8  # adam and rmsprop
  config.optimizer.rms_decay = 0.9
  config.optimizer.weight_decay = 0.0  # L2 (decoupled for adamw)
  config.optimizer.decay_norm_and_bias = False  # False: no decay on biases and norm parameters
  config.optimizer.lr_multipliers = ''  # "regex=mult,...", e.g. "conv1/.*=0" freezes conv1
  config.optimizer.grad_clip_norm = 0.0  # > 0: clip the global gradient norm

  config.schedule = ml_collections.ConfigDict()
  config.schedule.name = 'constant'  # constant | step | exponential | cosine | poly | plateau
  config.schedule.warmup_epochs = 0.0
  config.schedule.decay_epochs = ()  # step: multiply by decay_factor at these epochs
  config.schedule.decay_factor = 0.1  # step, exponential and plateau
  config.schedule.decay_every_epochs = 0.0  # exponential: multiply by decay_factor this often
  config.schedule.final_lr_fraction = 0.0  # cosine and poly
  config.schedule.power = 1.0  # poly: (1 - t/T)^power, 1 = linear decay
  config.schedule.metric = 'eval_top1'  # plateau: watched after every eval ('eval_loss' too)
  config.schedule.patience = 3  # plateau: evals without improvement before a reduction
  config.schedule.min_delta = 0.0
  config.schedule.max_reductions = 3  # AlexNet: three times

  config.prefetch_to_device = 2  # batches copied to the devices ahead of the step that takes them
  config.log_every_steps = 50  # the host waits for the devices only at log, eval and save steps
  config.eval_every_steps = 0  # 0 → every epoch (and always at the end)
  config.checkpoint_every_steps = 0  # 0 → every epoch (and at the end, and on SIGTERM/SIGINT)
  config.keep_checkpoints = 3
  return config
