"""`LlamaConfig` and the Llama-shaped configs that share its model (Mistral, Qwen2, SmolLM3).

Note [Llama-shaped configs]: Mistral, Qwen2 and SmolLM3 checkpoints are Llama with a few knobs
turned: Mistral adds a sliding window, Qwen2 puts biases on q/k/v (not on o), SmolLM3 can skip
rotary embeddings in some layers. Their configs load into the Llama model when the knobs leave
the model Llama-shaped (no window shorter than the sequence, rotary everywhere); otherwise the
config (or the forward, for the window) raises an error naming the field. Rotary embeddings:
`rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling` (transformers 4) are both
read; 'default' and 'linear' scaling are implemented, other rope types are refused by name.
"""

from __future__ import annotations

from ember.transformers.configuration_utils import PretrainedConfig

SUPPORTED_ROPE_TYPES = ("default", "linear")


class LlamaConfig(PretrainedConfig):
    """The configuration of a Llama model (HuggingFace's names and defaults: Llama-2-7B).

    Example:
        >>> from ember.transformers import LlamaConfig
        >>> config = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2)
        >>> config.head_dim, config.rope_theta, config.rope_parameters["rope_type"]
        (16, 10000.0, 'default')
    """

    model_type = "llama"
    # (q/k/v bias, o bias) when they differ from `attention_bias` (Qwen2)
    _qkv_bias: bool | None = None
    _o_bias: bool | None = None

    def __init__(
        self,
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=None,
        hidden_act="silu",
        max_position_embeddings=2048,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        use_cache=True,
        pad_token_id=None,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        rope_theta=None,
        rope_scaling=None,
        rope_parameters=None,
        attention_bias=False,
        attention_dropout=0.0,
        mlp_bias=False,
        head_dim=None,
        **kwargs,
    ):
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = (
            num_attention_heads if num_key_value_heads is None else num_key_value_heads
        )
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.attention_bias = attention_bias
        self.attention_dropout = attention_dropout
        self.mlp_bias = mlp_bias
        self.head_dim = head_dim if head_dim is not None else hidden_size // num_attention_heads
        self.rope_parameters = _rope_parameters(
            type(self).__name__, rope_parameters, rope_theta, rope_scaling, self._default_theta()
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, return_unused_kwargs=False, **kwargs):
        """Read `config.json`; on a Mistral/Qwen2/SmolLM3 folder, `LlamaConfig` gives that
        family's config, since they share the model (Note [Llama-shaped configs])."""
        if cls is LlamaConfig:
            data = cls.get_config_dict(pretrained_model_name_or_path, kwargs.get("gguf_file"))
            family = LLAMA_SHAPED.get(data.get("model_type"))
            if family is not None and family is not LlamaConfig:
                return family.from_pretrained(
                    pretrained_model_name_or_path, return_unused_kwargs, **kwargs
                )
        return super().from_pretrained(
            pretrained_model_name_or_path, return_unused_kwargs, **kwargs
        )

    def _default_theta(self) -> float:
        return 10000.0

    @property
    def rope_theta(self) -> float:
        return self.rope_parameters["rope_theta"]

    @rope_theta.setter
    def rope_theta(self, value: float) -> None:
        self.rope_parameters["rope_theta"] = float(value)

    @property
    def qkv_bias(self) -> bool:
        return self.attention_bias if self._qkv_bias is None else self._qkv_bias

    @property
    def o_bias(self) -> bool:
        return self.attention_bias if self._o_bias is None else self._o_bias

    def validate_llama_shape(self, where: str) -> None:
        """Raise, naming the field, where this config asks for more than Llama's model."""
        name = type(self).__name__
        rope_type = self.rope_parameters.get("rope_type")
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"{where}: {name}.rope_parameters rope_type {rope_type!r} is not supported; "
                f"ember implements {SUPPORTED_ROPE_TYPES}"
            )
        partial = self.rope_parameters.get(
            "partial_rotary_factor", getattr(self, "partial_rotary_factor", 1.0)
        )
        if partial not in (None, 1, 1.0):
            raise ValueError(
                f"{where}: {name}.partial_rotary_factor={partial} is not supported (ember "
                "rotates the whole head)"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"{where}: {name}.num_attention_heads ({self.num_attention_heads}) is not a "
                f"multiple of num_key_value_heads ({self.num_key_value_heads})"
            )
        if getattr(self, "pretraining_tp", 1) not in (None, 1):
            raise ValueError(
                f"{where}: {name}.pretraining_tp={self.pretraining_tp} is not supported (1 only)"
            )

    def sliding_window_size(self) -> int | None:
        """The attention window when one applies (Mistral; Qwen2 with use_sliding_window)."""
        return None


def _rope_parameters(name, rope_parameters, rope_theta, rope_scaling, default_theta) -> dict:
    """One dict {'rope_type', 'rope_theta', 'factor'?} from transformers 5's `rope_parameters`
    or transformers 4's `rope_theta` + `rope_scaling` (Note [Llama-shaped configs])."""
    params = dict(rope_parameters or {})
    if rope_scaling:
        if not isinstance(rope_scaling, dict):
            raise ValueError(f"{name}: rope_scaling must be a dict, got {rope_scaling!r}")
        params.update(rope_scaling)
    if "type" in params:  # transformers 4's older key
        params.setdefault("rope_type", params.pop("type"))
    params.setdefault("rope_type", "default")
    if rope_theta is not None:
        params["rope_theta"] = float(rope_theta)
    params.setdefault("rope_theta", float(default_theta))
    if params["rope_type"] == "linear":
        factor = params.get("factor")
        if not isinstance(factor, (int, float)) or factor < 1.0:
            raise ValueError(
                f"{name}: linear rope scaling needs rope_parameters['factor'] >= 1.0, got "
                f"{factor!r}"
            )
    return params


class MistralConfig(LlamaConfig):
    """Mistral: Llama with a sliding attention window (Note [Llama-shaped configs])."""

    model_type = "mistral"

    def __init__(
        self,
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=4096 * 32,
        rms_norm_eps=1e-6,
        sliding_window=4096,
        tie_word_embeddings=False,
        **kwargs,
    ):
        super().__init__(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            max_position_embeddings=max_position_embeddings,
            rms_norm_eps=rms_norm_eps,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        self.sliding_window = sliding_window

    def sliding_window_size(self) -> int | None:
        return self.sliding_window


class Qwen2Config(LlamaConfig):
    """Qwen2: Llama with biases on q/k/v (not o); a window only with use_sliding_window."""

    model_type = "qwen2"
    _qkv_bias = True
    _o_bias = False

    def __init__(
        self,
        vocab_size=151936,
        hidden_size=4096,
        intermediate_size=22016,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        use_sliding_window=False,
        sliding_window=4096,
        bos_token_id=None,
        eos_token_id=None,
        **kwargs,
    ):
        super().__init__(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            max_position_embeddings=max_position_embeddings,
            rms_norm_eps=rms_norm_eps,
            tie_word_embeddings=tie_word_embeddings,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            **kwargs,
        )
        self.use_sliding_window = use_sliding_window
        self.sliding_window = sliding_window

    def sliding_window_size(self) -> int | None:
        return self.sliding_window if self.use_sliding_window else None


class SmolLM3Config(LlamaConfig):
    """SmolLM3: Llama where `no_rope_layers` may switch rotary off per layer; loads only when
    every layer uses rotary embeddings (Note [Llama-shaped configs])."""

    model_type = "smollm3"

    def validate_llama_shape(self, where: str) -> None:
        super().validate_llama_shape(where)
        flags = getattr(self, "no_rope_layers", None)
        if flags is not None and not all(flags):
            raise ValueError(
                f"{where}: SmolLM3Config.no_rope_layers turns rotary embeddings off in layers "
                f"{[i for i, f in enumerate(flags) if not f]}; ember's Llama model rotates in "
                "every layer"
            )
        if getattr(self, "use_sliding_window", False):
            raise ValueError(f"{where}: SmolLM3Config.use_sliding_window=True is not supported")


# model_type -> config class of the families that load into Llama's model
LLAMA_SHAPED = {
    "llama": LlamaConfig,
    "mistral": MistralConfig,
    "qwen2": Qwen2Config,
    "smollm3": SmolLM3Config,
}
