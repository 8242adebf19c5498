"""How much GPU memory a model's context takes: the KV cache, from the shape Ollama's /api/show gives
(`model_info`). Ollama reserves num_ctx tokens of it for every parallel slot (OLLAMA_NUM_PARALLEL) beside the
weights, and since 0.15.5 picks a default context by the GPU's memory (256k tokens on 48 GB or more) unless the
request sets num_ctx: the figure that decides whether a model fits, and how many slots a GPU can hold.

An estimate: f16 keys and values (OLLAMA_KV_CACHE_TYPE=q8_0 halves it, q4_0 quarters it), full attention in every
layer (a sliding-window model such as gemma3 needs less), no compute buffers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

F16_BYTES = 2


@dataclass(frozen=True)
class KvShape:
    layers: int
    kv_heads: int | list[int]  # one number, or one per layer (models that vary it)
    head_dim: int

    @property
    def bytes_per_token(self) -> int:
        """Keys and values of one token in every layer, f16."""
        heads = self.kv_heads if isinstance(self.kv_heads, list) else [self.kv_heads] * self.layers
        return 2 * sum(heads) * self.head_dim * F16_BYTES

    def words(self) -> str:
        heads = self.kv_heads if isinstance(self.kv_heads, int) else f"{min(self.kv_heads)}–{max(self.kv_heads)}"
        return f"{self.layers} layers × {heads} KV heads × {self.head_dim}"


def kv_shape(model_info: Any) -> KvShape | None:
    """The KV cache's shape from /api/show's model_info, or None when it does not say enough (an embedding model,
    an architecture that names its keys otherwise, an old server)."""
    if not isinstance(model_info, dict):
        return None
    arch = model_info.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        return None

    def get(key: str) -> Any:
        return model_info.get(f"{arch}.{key}")

    layers, heads, kv, width = get("block_count"), get("attention.head_count"), get("attention.head_count_kv"), \
        get("embedding_length")
    if not _positive(layers):
        return None
    if isinstance(kv, list):
        kv = [k for k in kv if _positive(k)]
        if len(kv) != layers:
            return None
    elif not _positive(kv):
        kv = heads  # no grouped-query attention: every head keeps its keys
        if not _positive(kv):
            return None
    head_dim = get("attention.key_length")
    if not _positive(head_dim):
        head_count = heads if _positive(heads) else None
        if head_count is None or not _positive(width) or width % head_count:
            return None
        head_dim = width // head_count
    return KvShape(layers=layers, kv_heads=kv, head_dim=head_dim)


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def gigabytes(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.1f} GB"
