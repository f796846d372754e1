"""Factory references: models from the user's own files and modules wherever a registry name works."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from metaprune.errors import ConfigError, ModelError
from metaprune.models import (
    FactoryReference,
    check_reference,
    create_model,
    create_model_from_spec,
    is_reference,
    model_spec,
)
from metaprune.specs import TaskSpec

NET = """
from torch import nn


def make_net(num_classes, in_channels, width=8, activation=nn.ReLU):
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), activation(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(width, num_classes))


class Net(nn.Module):
    def __init__(self, num_classes, image_size, in_channels=1):
        super().__init__()
        self.image_size = image_size
        self.fc = nn.Linear(in_channels * image_size * image_size, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))

    @classmethod
    def small(cls, num_classes, **kwargs):
        return cls(num_classes, image_size=4)


def anything(**kwargs):
    return nn.Linear(2, 2)


def not_a_model(num_classes):
    return [num_classes]


def raises(num_classes):
    raise RuntimeError("no GPU here")


NOT_CALLABLE = 3
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def net_file(tmp_path: Path) -> Path:
    return write(tmp_path / "models" / "mymodels.py", NET)


def test_parse_tells_files_from_modules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    file = FactoryReference.parse("sub/mymodels.py:make_net")
    assert (file.is_file, file.attribute) == (True, "make_net")
    assert file.canonical() == f"{tmp_path / 'sub' / 'mymodels.py'}:make_net"
    module = FactoryReference.parse("pkg.nets:Zoo.small")
    assert (module.is_file, module.target, module.attribute) == (False, "pkg.nets", "Zoo.small")
    assert module.canonical() == "pkg.nets:Zoo.small"
    assert is_reference("a.py:f") and not is_reference("resnet20") and not is_reference(3)


@pytest.mark.parametrize("text", [":make", "mymodels.py:", "mymodels.py:1net", "my-models:make", "a b:c"])
def test_malformed_references_are_config_errors(text):
    with pytest.raises(ConfigError, match="file.py:factory"):
        FactoryReference.parse(text)


def test_file_factory_gets_only_the_shape_arguments_it_names(net_file, tmp_path, monkeypatch):
    monkeypatch.chdir(net_file.parent)
    model = create_model("mymodels.py:make_net", num_classes=3, in_channels=2, image_size=16, width=4)
    assert model(torch.zeros(1, 2, 16, 16)).shape == (1, 3)
    spec = model_spec(model)
    # the file is recorded absolute; every shape argument, the options and the JSON-friendly defaults
    # are recorded (the class default `activation` is not)
    assert spec == {"name": f"{net_file}:make_net",
                    "kwargs": {"num_classes": 3, "in_channels": 2, "image_size": 16, "width": 4}}
    monkeypatch.chdir(tmp_path)  # another folder: the absolute path still finds the file
    rebuilt = create_model_from_spec(json.loads(json.dumps(spec)))
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, 2, 16, 16)
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    assert model_spec(rebuilt) == spec


def test_classes_dotted_attributes_and_catch_alls(net_file):
    net = create_model(f"{net_file}:Net", num_classes=4, in_channels=1, image_size=8)
    assert net.image_size == 8 and net.fc.in_features == 64
    assert create_model(f"{net_file}:Net.small", num_classes=4).fc.in_features == 16
    # **kwargs gets no shape argument (it might forward them to a library that names them otherwise)
    assert isinstance(create_model(f"{net_file}:anything"), nn.Linear)


def test_module_references_stay_as_given(tmp_path, monkeypatch):
    write(tmp_path / "userpkg" / "__init__.py", "")
    write(tmp_path / "userpkg" / "nets.py", NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = create_model("userpkg.nets:make_net", num_classes=5, in_channels=1)
    assert model_spec(model)["name"] == "userpkg.nets:make_net"
    assert model[-1].out_features == 5
    monkeypatch.delitem(sys.modules, "userpkg.nets")
    monkeypatch.delitem(sys.modules, "userpkg")


def test_a_file_imports_its_neighbours_without_leaking_its_folder(tmp_path):
    write(tmp_path / "blocks.py", "from torch import nn\n\ndef block(n):\n    return nn.Linear(n, n)\n")
    write(tmp_path / "net.py", "from blocks import block\n\ndef make(num_classes):\n    return block(num_classes)\n")
    assert create_model(f"{tmp_path}/net.py:make", num_classes=6).in_features == 6
    assert str(tmp_path) not in sys.path
    sys.modules.pop("blocks", None)


def test_an_edited_file_is_imported_again(tmp_path):
    path = write(tmp_path / "net.py", "from torch import nn\n\ndef make(num_classes):\n    return nn.Linear(2, num_classes)\n")
    assert create_model(f"{path}:make", num_classes=3).in_features == 2
    write(path, "from torch import nn\n\ndef make(num_classes):\n    return nn.Linear(7, num_classes)\n\n")
    assert create_model(f"{path}:make", num_classes=3).in_features == 7


def test_task_spec_builds_a_referenced_model(net_file):
    class Splits:
        num_classes, in_channels, image_size = 10, 1, 16

    model = TaskSpec(model=f"{net_file}:make_net", model_kwargs={"width": 6}).build_model(Splits())
    assert model[0].out_channels == 6 and model[-1].out_features == 10


def test_check_reference_resolves_without_building(net_file):
    assert check_reference(f"{net_file}:make_net", {"width": 2}) == f"{net_file}:make_net"
    with pytest.raises(ConfigError, match="bad arguments.*depth.*options are \\['width', 'activation'\\]"):
        check_reference(f"{net_file}:make_net", {"depth": 2})


@pytest.mark.parametrize(("reference", "kwargs", "error", "message"), [
    ("{dir}/absent.py:make_net", {}, ConfigError, "model file .*absent.py not found"),
    ("{dir}/mymodels.py:make_nett", {}, ConfigError, "has no 'make_nett'; define it there or use one of .*make_net"),
    ("{dir}/mymodels.py:Net.tiny", {}, ConfigError, "Net in file .* has no 'tiny'"),
    ("{dir}/mymodels.py:NOT_CALLABLE", {}, ModelError, "is a int, not a factory"),
    ("{dir}/mymodels.py:not_a_model", {}, ModelError, "returned a list, not a torch.nn.Module"),
    ("{dir}/mymodels.py:raises", {}, ModelError, "raised RuntimeError: no GPU here"),
    ("{dir}/mymodels.py:make_net", {"depth": 3}, ConfigError, "bad arguments for model .*depth"),
    ("{dir}/broken.py:make", {}, ModelError, "importing model file .*broken.py raised ZeroDivisionError: division by zero"),
    ("{dir}/syntax.py:make", {}, ModelError, "importing model file .*syntax.py raised SyntaxError"),
    ("no_such_package_xyz.nets:make", {}, ConfigError, "cannot import module 'no_such_package_xyz.nets'.*PYTHONPATH"),
    ("mymodels.py", {}, ConfigError, "needs its factory: mymodels.py:FACTORY"),
])
def test_bad_references_raise_one_line_errors(net_file, reference, kwargs, error, message):
    write(net_file.parent / "broken.py", "x = 1 / 0\n")
    write(net_file.parent / "syntax.py", "def make(:\n")
    with pytest.raises(error, match=message) as caught:
        create_model(reference.format(dir=net_file.parent), **kwargs)
    assert "\n" not in str(caught.value)
    assert not any(name.startswith("_metaprune_user_model_broken") for name in sys.modules)


def test_a_module_whose_dependency_is_missing_is_a_model_error(tmp_path, monkeypatch):
    write(tmp_path / "needs_dep.py", "import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError, match="importing module 'needs_dep' raised ModuleNotFoundError.*no_such_dependency"):
        create_model("needs_dep:make")
