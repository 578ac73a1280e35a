"""Model zoo: importing a family module registers its names."""

# pylint: disable=unused-import
from models import alexnet, densenet, googlenet, lenet, nin, preact_resnet, resnet, vgg
from models.registry import UnknownModelError, create_model, list_models, register

__all__ = ['UnknownModelError', 'create_model', 'list_models', 'register']
