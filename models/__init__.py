"""Model zoo: importing a family module registers its names."""

# pylint: disable=unused-import
from models import (
    alexnet,
    densenet,
    encoder_decoder,
    googlenet,
    highway,
    inception,
    inception_v4,
    lenet,
    mobilenet,
    nin,
    preact_resnet,
    resnet,
    resnext,
    rir,
    senet,
    shufflenet,
    squeezenet,
    vgg,
    wide_resnet,
    xception,
)
from models.registry import (
    PRECISIONS,
    ModelEntry,
    NativeInput,
    UnknownModelError,
    compute_dtype,
    create_model,
    entry,
    from_config,
    list_models,
    native_input,
    register,
)

__all__ = [
    'PRECISIONS',
    'ModelEntry',
    'NativeInput',
    'UnknownModelError',
    'compute_dtype',
    'create_model',
    'entry',
    'from_config',
    'list_models',
    'native_input',
    'register',
]
