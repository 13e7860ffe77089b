"""The registry of reconstruction methods: capture -> :class:`~geo3d.structures.OpenVocabField`.

A method is a class with a ``name``, a one-line ``summary``, the ``Options`` dataclass of its
settings (with an optional ``check()`` that raises on bad values, called when the method is built)
and ``reconstruct(capture, frame_index, progress=None) -> OpenVocabField``. It is built from
its options and the shared :class:`Resources` (text encoder, dense teacher, checkpoint): what a method
needs and cannot find raises :class:`~geo3d.structures.field.FieldError` (or ``MissingDependencyError``)
before any work. ``geo3d reconstruct --method NAME`` looks methods up here, so a new method (NeRF,
splatting) plugs in with :func:`register_method` and needs no change to the app::

    @register_method
    class MyMethod(ReconstructionMethod):
        name = "mine"
        summary = "What it does."
        Options = MyOptions
        needs = ("teacher",)            # resources to build besides the text encoder

        def reconstruct(self, capture, frame_index, progress=None):
            ...

The field of every method lives in the ego frame of the reference frame ``frame_index`` (x forward,
y left, z up, metres), on the grid of the options (default: Occ3D's 200 x 200 x 16 voxels of 0.4 m),
with its features in the text encoder's space and metadata naming the method, capture and options.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from geo3d.structures.capture import Capture
from geo3d.structures.field import FieldError, OpenVocabField
from geo3d.utils.jsonable import json_ready

Progress = Callable[[str, int, int], None]
"""``progress(step, done, total)``: called by long steps of a method (e.g. to drive a progress bar)."""


@dataclass
class Resources:
    """What methods share, built by the caller (the app): each method takes what it needs.

    Attributes:
        text_encoder: a :class:`~geo3d.language.TextEncoder`; its ``space`` becomes the field's space.
        text_encoder_spec: the spec string that rebuilds it (``"minilm"``, ``"clip:/path"``), stored in
            the field's metadata so ``geo3d query`` can encode queries in the same space.
        teacher: a dense 2D teacher (:class:`~geo3d.language.teachers.DenseTeacher`) or a callable
            ``teacher_for(capture) -> DenseTeacher`` (built on demand), or None.
        checkpoint: path of a network checkpoint (methods with a network), or None.
        device: torch device of the computation.
    """

    text_encoder: Any = None
    text_encoder_spec: str = "minilm"
    teacher: Any = None
    checkpoint: Any = None
    device: str = "cpu"


class ReconstructionMethod(abc.ABC):
    """Base class of the methods (module docstring)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Options: ClassVar[type]
    needs: ClassVar[tuple[str, ...]] = ()
    """The :class:`Resources` the method reads besides ``text_encoder`` (``"teacher"``, ``"checkpoint"``),
    so that a caller builds only those."""

    def __init__(self, options: Any = None, resources: Resources | None = None) -> None:
        options = self.Options() if options is None else options
        if not isinstance(options, self.Options):
            raise FieldError(f"method {self.name!r} takes {self.Options.__name__} options, "
                             f"got {type(options).__name__}")
        if callable(getattr(options, "check", None)):
            options.check()  # bad options fail before any work
        self.options = options
        self.resources = Resources() if resources is None else resources

    @abc.abstractmethod
    def reconstruct(self, capture: Capture, frame_index: int = 0, progress: Progress | None = None
                    ) -> OpenVocabField:
        """The field of ``capture`` around frame ``frame_index`` (in that frame's ego frame)."""

    def options_dict(self) -> dict[str, Any]:
        """The options as JSON-ready values (for the field's metadata)."""
        return json_ready(dataclasses.asdict(self.options), other=str)


_METHODS: dict[str, type[ReconstructionMethod]] = {}


def register_method(cls: type[ReconstructionMethod]) -> type[ReconstructionMethod]:
    """Class decorator: make ``cls`` available as ``get_method(cls.name)``."""
    for attribute in ("name", "summary", "Options"):
        if not hasattr(cls, attribute):
            raise TypeError(f"{cls.__name__} needs a class attribute {attribute!r}")
    if not dataclasses.is_dataclass(cls.Options):
        raise TypeError(f"{cls.__name__}.Options must be a dataclass")
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(f"a reconstruction method named {cls.name!r} is already registered")
    _METHODS[cls.name] = cls
    return cls


def _load_builtin() -> None:
    # the built-in methods register themselves on import
    from geo3d.fields import fusion, pop3d  # noqa: F401


def method_names() -> list[str]:
    """Names of the registered methods, in registration order."""
    _load_builtin()
    return list(_METHODS)


def get_method(name: str) -> type[ReconstructionMethod]:
    """The method class registered as ``name`` (:class:`FieldError` listing the known ones otherwise)."""
    _load_builtin()
    if name not in _METHODS:
        raise FieldError(f"unknown reconstruction method {name!r} (methods: {', '.join(_METHODS)})")
    return _METHODS[name]
