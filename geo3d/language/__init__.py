"""Language: text encoders, prompt ensembling and relevancy scores for open-vocabulary 3D perception.

- :mod:`geo3d.language.text`: the :class:`TextEncoder` interface (strings -> unit ``[N, D]``, with an
  embedding-space identity ``space``), the offline default :class:`MiniLMTextEncoder`, the CLIP text
  tower from a local checkpoint (:class:`CLIPTextEncoder`, transformers; :class:`OpenCLIPTextEncoder`,
  open_clip) and :func:`get_text_encoder` (``"minilm"``, ``"clip:/path"``, ``"open_clip:MODEL:/path"``).
- :mod:`geo3d.language.prompts`: :class:`PromptTemplates`, prompt ensembling (:func:`encode_prompts`)
  and class ensembling over synonyms (:func:`encode_classes`, :data:`SYNTHETIC_CLASS_PHRASES`).
- :mod:`geo3d.language.relevancy`: cosine similarity, softmax zero-shot classification and LERF
  relevancy against canonical negatives.
- :mod:`geo3d.language.teachers`: the dense 2D teacher interface (images ``[C, H, W, 3]`` ->
  :class:`DenseFeatures` ``[C, h, w, D]`` in a text encoder's space) and :func:`sample_features` at
  pixel coordinates; :class:`MaskCLIPTeacher` (dense CLIP features from a local transformers
  checkpoint) and :class:`LabelTeacher` (the synthetic stand-in: degraded class-prompt embeddings).
- :mod:`geo3d.language.cache`: :class:`FeatureCache`, teacher features on disk keyed by teacher identity.

Heavy back-ends (transformers, open_clip) load on first use. Nothing downloads weights: see
``docs/language.md`` for how to bring a CLIP checkpoint to an offline machine.
"""

from geo3d.language.cache import FeatureCache
from geo3d.language.label_teacher import LabelTeacher
from geo3d.language.maskclip import MaskCLIPTeacher, interpolate_position_embeddings
from geo3d.language.prompts import (
    DEFAULT_TEMPLATES,
    SYNTHETIC_CLASS_PHRASES,
    PromptTemplates,
    encode_classes,
    encode_prompts,
    encode_unit,
)
from geo3d.language.relevancy import (
    CANONICAL_NEGATIVES,
    ClassPrediction,
    canonical_negatives,
    cosine_similarity,
    relevancy,
    softmax_classify,
)
from geo3d.language.text import (
    MINILM_SPACE,
    TEXT_ENCODER_SPECS,
    CLIPTextEncoder,
    LanguageError,
    MiniLMTextEncoder,
    OpenCLIPTextEncoder,
    TextEncoder,
    check_clip_folder,
    check_texts,
    clip_space_id,
    get_text_encoder,
    minilm_model_dir,
)
from geo3d.language.teachers import DenseFeatures, DenseTeacher, TeacherError, sample_features

__all__ = [
    "DenseFeatures",
    "DenseTeacher",
    "FeatureCache",
    "LabelTeacher",
    "MaskCLIPTeacher",
    "TeacherError",
    "clip_space_id",
    "interpolate_position_embeddings",
    "sample_features",
    "CANONICAL_NEGATIVES",
    "CLIPTextEncoder",
    "ClassPrediction",
    "DEFAULT_TEMPLATES",
    "LanguageError",
    "MINILM_SPACE",
    "MiniLMTextEncoder",
    "OpenCLIPTextEncoder",
    "PromptTemplates",
    "SYNTHETIC_CLASS_PHRASES",
    "TEXT_ENCODER_SPECS",
    "TextEncoder",
    "canonical_negatives",
    "check_clip_folder",
    "check_texts",
    "cosine_similarity",
    "encode_classes",
    "encode_prompts",
    "encode_unit",
    "get_text_encoder",
    "minilm_model_dir",
    "relevancy",
    "softmax_classify",
]
