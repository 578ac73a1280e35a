"""Model zoo: import a family module here to register its names."""

from models import lenet  # noqa: F401  (registers lenet5)
from models.registry import UnknownModelError, create_model, list_models, register

__all__ = ['UnknownModelError', 'create_model', 'list_models', 'register']
