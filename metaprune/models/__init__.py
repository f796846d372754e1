"""Reference architectures behind a timm-style registry.

>>> from metaprune.models import create_model, model_spec
>>> model = create_model("resnet20", num_classes=10, in_channels=3, image_size=32)
>>> model_spec(model)["name"]
'resnet20'

Families: CIFAR ResNet-20/32/56, VGG-11/16/19 (BN), an MLP and a tiny ViT. A factory reference
(``path/to/file.py:make_net`` or ``package.module:make_net``) builds a model from the user's own
code wherever a name is accepted (:mod:`metaprune.models.references`).
"""

from metaprune.models import mlp, resnet, vgg, vit  # noqa: F401  (importing registers the models)
from metaprune.models.references import FactoryReference, check_reference, is_reference
from metaprune.models.registry import (
    MODELS,
    create_model,
    create_model_from_spec,
    list_models,
    model_spec,
    register_model,
)

__all__ = ["MODELS", "FactoryReference", "check_reference", "create_model", "create_model_from_spec", "is_reference",
           "list_models", "model_spec", "register_model"]
