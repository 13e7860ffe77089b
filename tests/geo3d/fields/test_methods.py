"""geo3d.fields.methods: the registry of reconstruction methods (built-ins, lookup errors, registering a
method, duplicate names, malformed classes) and the option checks of the base class."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from geo3d.fields import methods
from geo3d.fields.fusion import FusionMethod, FusionOptions
from geo3d.fields.methods import ReconstructionMethod, Resources, get_method, method_names, register_method
from geo3d.fields.pop3d import Pop3dMethod, Pop3dOptions
from geo3d.structures import Capture, Frame, OpenVocabField
from geo3d.structures.field import FieldError

NAME = "test-constant-field"


@dataclass
class ConstantOptions:
    value: float = 0.75
    shape: tuple[int, int, int] = (2, 3, 4)
    where: Path = Path("/data/somewhere")
    notes: dict = field(default_factory=lambda: {"k": (1, 2)})


class ConstantMethod(ReconstructionMethod):
    name = NAME
    summary = "a constant occupancy, one feature voxel per frame index"
    Options = ConstantOptions

    def reconstruct(self, capture, frame_index=0, progress=None):
        occupancy = np.full(self.options.shape, self.options.value, np.float32)
        return OpenVocabField((0, 0, 0), 1.0, "ego", occupancy, [[frame_index, 0, 0]], np.ones((1, 1), np.float32),
                              "const:test", metadata={"method": self.name, "options": self.options_dict()})


@pytest.fixture
def registered():
    """ConstantMethod registered for one test, then removed so the registry stays as shipped."""
    register_method(ConstantMethod)
    yield ConstantMethod
    methods._METHODS.pop(NAME, None)


def test_builtin_methods_are_registered():
    names = method_names()
    assert {"fusion", "pop3d"} <= set(names) and len(set(names)) == len(names)
    assert get_method("fusion") is FusionMethod and get_method("pop3d") is Pop3dMethod
    for name in ("fusion", "pop3d"):
        cls = get_method(name)
        assert cls.name == name and isinstance(cls.summary, str) and cls.summary
        assert isinstance(cls(), ReconstructionMethod)  # default options, empty resources


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(FieldError, match="unknown reconstruction method 'nerf'") as error:
        get_method("nerf")
    assert "fusion" in str(error.value) and "pop3d" in str(error.value)


def test_register_a_custom_method(registered):
    assert NAME in method_names() and get_method(NAME) is ConstantMethod
    assert register_method(ConstantMethod) is ConstantMethod  # registering the same class again is harmless
    method = get_method(NAME)(ConstantOptions(value=0.25), Resources(device="cpu"))
    capture = Capture([Frame(index=0), Frame(index=1)])
    field_ = method.reconstruct(capture, 1)
    assert field_.shape == (2, 3, 4) and np.allclose(field_.occupancy, 0.25)
    assert field_.indices.tolist() == [[1, 0, 0]]
    # options_dict is JSON-ready: tuples -> lists, paths -> strings, nested values converted
    assert field_.metadata["options"] == {"value": 0.25, "shape": [2, 3, 4], "where": "/data/somewhere",
                                          "notes": {"k": [1, 2]}}
    assert method.resources.device == "cpu" and method.resources.text_encoder_spec == "minilm"


def test_duplicate_and_malformed_registrations(registered):
    class Impostor(ConstantMethod):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_method(Impostor)
    assert get_method(NAME) is ConstantMethod

    class Nameless(ReconstructionMethod):
        summary = "no name"
        Options = ConstantOptions

        def reconstruct(self, capture, frame_index=0, progress=None):
            raise AssertionError

    with pytest.raises(TypeError, match="'name'"):
        register_method(Nameless)

    class PlainOptions(ConstantMethod):
        name = "test-plain-options"

        class Options:  # not a dataclass
            pass

    with pytest.raises(TypeError, match="dataclass"):
        register_method(PlainOptions)
    assert "test-plain-options" not in method_names()


def test_options_are_checked_when_the_method_is_built(registered):
    @dataclass
    class CheckedOptions(ConstantOptions):
        def check(self):
            if not 0 <= self.value <= 1:
                raise FieldError(f"value must lie in [0, 1], got {self.value}")

    class Checked(ConstantMethod):
        Options = CheckedOptions

    assert Checked(CheckedOptions(value=0.5)).options.value == 0.5
    with pytest.raises(FieldError, match="value must lie in"):
        Checked(CheckedOptions(value=2.0))
    with pytest.raises(FieldError, match="unknown geometry 'radar'"):
        FusionMethod(FusionOptions(geometry="radar"))


def test_options_of_the_wrong_type_raise():
    with pytest.raises(FieldError, match="'fusion' takes FusionOptions options, got Pop3dOptions"):
        FusionMethod(Pop3dOptions())
    with pytest.raises(FieldError, match="'pop3d' takes Pop3dOptions options, got FusionOptions"):
        Pop3dMethod(FusionOptions())
    with pytest.raises(FieldError, match="got dict"):
        FusionMethod({"geometry": "lidar"})
    method = FusionMethod(None, None)
    assert method.options == FusionOptions() and method.resources == Resources()
