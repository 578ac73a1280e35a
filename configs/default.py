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
  # Mixed precision: 'float32' | 'bfloat16', the dtype every model's convolutions and matrix
  # multiplies run in. Parameters, BatchNorm statistics, the optimizer state, the logits and the
  # loss stay float32 either way. A config's `model.dtype` (the older per-model switch) wins
  # while this is 'float32'; set both and they must agree.
  config.precision = 'float32'

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
  # tf.data's own threadpool for decoding and preprocessing (map, batch and prefetch are all
  # AUTOTUNE); 0 = TensorFlow's shared pool. A host feeding a fast GPU may give it more.
  config.dataset.threads = 0
  config.dataset.imagenet_labels = False  # True: labels as ImageNet's 1000 (Imagenette, ...)
  config.dataset.holdout_classes = ()  # metric learning: classes kept out of training entirely

  # 'classification', or 'metric_learning': an embedding (config.model.embedding_dim > 0)
  # trained on pairs, triplets or P×K batches, evaluated by verification, retrieval and N-way
  # K-shot accuracy on classes held out of training (docs/metric_learning.md); or
  # 'segmentation': a per-pixel model (encoder_decoder) labels each digit's stroke pixels with
  # its class and the rest as background, scored by pixel accuracy and mean IoU
  # (docs/segmentation.md).
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

  # Starting from trained weights (fine-tuning, compression, a distilled student): the newest
  # checkpoint of another workdir, which is only read. Applies when this workdir has no checkpoint.
  config.init_from = ''  # a workdir; '' = from the initialisers
  config.init_from_exclude = ''  # regex over 'layer/name' paths left fresh, e.g. 'head/.*'

  # Knowledge distillation (Hinton, Vinyals & Dean 2015): the student (config.model) learns from
  # a trained teacher's softened outputs as well as from the labels.
  config.distill = ml_collections.ConfigDict()
  config.distill.teacher = ''  # a trained workdir; '' = no teacher
  config.distill.temperature = 4.0  # T: both softmaxes at logits / T
  config.distill.soft_weight = 0.9  # loss = w·T²·KL(teacher_T ‖ student_T) + (1 − w)·CE(labels)

  # Unstructured magnitude pruning while training (Zhu & Gupta 2017's schedule; masks live in the
  # optimizer state), and the fine-tuning modes of already compressed weights.
  config.pruning = ml_collections.ConfigDict()
  config.pruning.sparsity = 0.0  # final fraction of prunable weights at zero; 0 = off
  config.pruning.initial_sparsity = 0.0
  config.pruning.begin_step = 0
  config.pruning.end_step = 0  # 0 → at 3/4 of the run; constant sparsity after it
  config.pruning.frequency = 100  # steps between mask updates (rank, remove, fine-tune, repeat)
  config.pruning.power = 3.0  # s_t = s_f + (s_i − s_f)(1 − progress)^power
  config.pruning.scope = 'layer'  # 'layer': each tensor at s_t; 'global': one threshold for all
  config.pruning.params = '.*kernel'  # regex over 'layer/name' paths: the prunable tensors
  config.pruning.layer_sparsity = ''  # "regex=s,..." final sparsity per layer, e.g. "fc1/.*=0.92"
  config.pruning.keep_zeros = False  # weights that start at zero stay zero (retraining)
  config.pruning.keep_shared = False  # weights that start equal move together (Deep Compression)

  # --mode=compress: one method applied to the trained run `init_from` (the teacher for distill),
  # writing the compressed model and a report (docs/compression.md).
  config.compression = ml_collections.ConfigDict()
  config.compression.method = ''  # see compression.methods.METHODS
  config.compression.fraction = 0.5  # filter_prune: channels removed; low_rank: rank kept
  config.compression.layers = ''  # regex over layer paths the method touches; '' = its default
  config.compression.saliency = 'l1'  # filter_prune: filter ranking
  config.compression.energy = 0.0  # low_rank: > 0 picks each layer's rank by this energy kept
  config.compression.conv_factorization = 'spatial'  # low_rank: 'spatial' k×1+1×k | 'channel'
  config.compression.bits = 8  # ptq, qat: weight bits; kmeans: bits for every layer
  config.compression.conv_bits = 8  # deep_compression and kmeans: conv layers' index bits
  config.compression.dense_bits = 5  # deep_compression and kmeans: dense layers' index bits
  config.compression.binary_activations = False  # binary: the layers' inputs in {−1, +1} too
  config.compression.binary_scale = True  # binary: XNOR-Net's α = mean|W| per filter
  config.compression.pq_dimension = 4  # pq: weights per sub-vector (Gong et al.'s s = in / this)
  config.compression.pq_centroids = 16  # pq: centroids per sub-space
  config.compression.calibration_batches = 8  # ptq: training batches for activation ranges
  config.compression.finetune_steps = 0  # steps of fine-tuning after the method; 0 = none
  config.compression.finetune_lr_scale = 0.1  # × optimizer.lr (Han et al. retrain at 1/10)
  config.compression.latency_batch = 128  # images per timed inference call

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
