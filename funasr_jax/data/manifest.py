"""FunASR ChatML JSONL manifests -> a list of `Example` records.

One JSON object per line (the ChatML JSONL of FunASR's Fun-ASR fine-tuning guide)::

    {"key": "utt1",
     "messages": [{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "语音转写：<|startofspeech|>!wav/utt1.wav<|endofspeech|>"},
                  {"role": "assistant", "content": "transcript"}],
     "speech_length": 560, "text_length": 12,
     "language": "zh", "hotwords": ["..."], "subset": "demo", "first_pass": "..."}

`speech_length` counts 10 ms fbank frames (used only for length bucketing), `text_length`
counts LLM tokens; `first_pass` is an optional first-pass (CTC) hypothesis of the utterance
(`python -m funasr_jax.first_pass` writes it) that a data config with `first_pass_prompt`
puts into the prompt. A line without an assistant message is *unlabelled* (`target` None): only
a reader that asks for them (`read_manifests(labelled=False)`, the trainer with
`data.require_transcripts=false`, i.e. Best-RQ) accepts it; any other reader stops at it naming
file:line, so audio without transcripts never trains a stage as if its transcript were "".
`python -m funasr_jax.audio_list` writes such lines from a list of audio files. Only single-turn
lines (one user + at most one assistant message, optional system) are supported. Relative audio
paths are resolved against the folder of the JSONL file.

Every problem raises `ManifestError` whose message starts with `file:line:` and names the
field; `read_manifests(..., on_error="skip")` logs one warning per bad line instead. A reader that
needs examples raises `EmptyManifestError` (`empty_manifest_message`) when there are none.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from funasr_jax.audio.io import AudioError, load_audio, load_audio_bytes
from funasr_jax.text.prompt import DEFAULT_SYSTEM_PROMPT

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "LANGUAGES",
    "SPEECH_BEGIN",
    "SPEECH_END",
    "EmptyManifestError",
    "Example",
    "ManifestError",
    "ManifestStats",
    "empty_manifest_message",
    "parse_line",
    "read_manifest",
    "audio_present",
    "example_audio",
    "read_manifests",
    "require_jsonl",
]

log = logging.getLogger(__name__)

SPEECH_BEGIN = "<|startofspeech|>"
SPEECH_END = "<|endofspeech|>"
# 'cs' marks zh/en code-switching data.
LANGUAGES = ("zh", "en", "cs")

_SPEECH_RE = re.compile(re.escape(SPEECH_BEGIN) + r"(.*?)" + re.escape(SPEECH_END), re.DOTALL)


class ManifestError(ValueError):
    """A manifest line is unusable; the message names `file:line` and the field."""


class EmptyManifestError(ManifestError):
    """The manifests hold no usable example (empty files, or every line skipped as unusable)."""


@dataclass(frozen=True)
class Example:
    """One utterance of a manifest.

    speech_length: 10 ms fbank frames (from the manifest; used for bucketing only).
    text_length: LLM tokens of the target per the manifest (0 if absent; informational).
    source / line: the JSONL file and its 1-based line number (for error messages).
    """

    key: str
    audio_path: str
    system: str
    instruction: str
    target: str | None  # None: an unlabelled line (no assistant message)
    language: str | None
    hotwords: tuple[str, ...]
    subset: str | None
    speech_length: int
    source: str
    line: int
    text_length: int = 0
    first_pass: str | None = None
    audio_end_ms: float | None = None  # only the audio before this time is the utterance (a cut copy)
    shard_ref: tuple[str, int] | None = None  # (array_record file, record index): audio from a shard (`data.shards`)

    @property
    def where(self) -> str:
        """`file:line` of this example's manifest line."""
        return f"{self.source}:{self.line}"


@dataclass
class ManifestStats:
    """Counts from `read_manifests` (filled in when passed as `stats=`)."""

    lines: int = 0
    examples: int = 0
    skipped: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)


def empty_manifest_message(files, stats: ManifestStats, option: str) -> str:
    """One line: which manifests gave no example (`option` names the setting that lists them),
    how many lines they had and why they were skipped."""
    names = ", ".join(str(f) for f in files)
    why = f"{stats.lines} lines"
    if stats.skipped:
        why += f", {stats.skipped} skipped as unusable (first: {stats.errors[0]})"
    return f"{option}: no usable example in {names} ({why})"


def _fail(where: str, msg: str) -> ManifestError:
    return ManifestError(f"{where}: {msg}")


def _int_field(obj: dict, name: str, where: str, *, required: bool) -> int:
    if name not in obj:
        if required:
            raise _fail(where, f"missing field '{name}'")
        return 0
    v = obj[name]
    # FunASR also writes these as one-element lists.
    if isinstance(v, list) and len(v) == 1:
        v = v[0]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise _fail(where, f"field '{name}' must be an integer, got {type(v).__name__} {v!r}")
    v = int(v)
    if v < 0:
        raise _fail(where, f"field '{name}' must be >= 0, got {v}")
    return v


def _split_user(content: str, where: str) -> tuple[str, str]:
    """user content -> (instruction, audio path as written)."""
    matches = list(_SPEECH_RE.finditer(content))
    if not matches:
        raise _fail(where, f"field 'messages[user].content' has no {SPEECH_BEGIN}!path{SPEECH_END} speech marker")
    if len(matches) > 1:
        raise _fail(where, f"field 'messages[user].content' has {len(matches)} speech markers; only one is supported")
    m = matches[0]
    if content[m.end():].strip():
        raise _fail(where, f"field 'messages[user].content' has text after {SPEECH_END}; "
                           "the instruction must precede the audio")
    ref = m.group(1)
    if not ref.startswith("!") or len(ref) < 2:
        raise _fail(where, f"field 'messages[user].content': speech marker must hold '!<audio path>', got {ref!r}")
    return content[: m.start()], ref[1:]


def parse_line(text: str, source: str, line: int) -> Example | None:
    """Parses one JSONL line. Returns None for a blank line; raises ManifestError."""
    where = f"{source}:{line}"
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise _fail(where, f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise _fail(where, f"line must be a JSON object, got {type(obj).__name__}")

    msgs = obj.get("messages")
    if msgs is None:
        raise _fail(where, "missing field 'messages'")
    if not isinstance(msgs, list):
        raise _fail(where, f"field 'messages' must be a list, got {type(msgs).__name__}")
    by_role: dict[str, list[str]] = {"system": [], "user": [], "assistant": []}
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise _fail(where, f"field 'messages[{i}]' must be an object, got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in by_role:
            raise _fail(where, f"field 'messages[{i}].role' must be one of system/user/assistant, got {role!r}")
        if not isinstance(content, str):
            raise _fail(where, f"field 'messages[{i}].content' must be a string, got {type(content).__name__}")
        by_role[role].append(content)
    for role, n_ok in (("user", (1,)), ("assistant", (0, 1))):
        if len(by_role[role]) not in n_ok:
            how_many = "exactly" if role == "user" else "at most"
            raise _fail(where, f"field 'messages' needs {how_many} one '{role}' message, found {len(by_role[role])}"
                               " (multi-turn lines are not supported)")
    if len(by_role["system"]) > 1:
        raise _fail(where, f"field 'messages' has {len(by_role['system'])} 'system' messages; at most one allowed")
    system = by_role["system"][0] if by_role["system"] else DEFAULT_SYSTEM_PROMPT
    instruction, path = _split_user(by_role["user"][0], where)

    key = obj.get("key", f"{os.path.basename(source)}:{line}")
    if isinstance(key, list) and len(key) == 1:
        key = key[0]
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise _fail(where, f"field 'key' must be a string, got {type(key).__name__}")
    speech_length = _int_field(obj, "speech_length", where, required=True)
    text_length = _int_field(obj, "text_length", where, required=False)

    language = obj.get("language")
    if language is not None:
        if not isinstance(language, str):
            raise _fail(where, f"field 'language' must be a string, got {type(language).__name__}")
        if language not in LANGUAGES:
            raise _fail(where, f"field 'language' has unknown value {language!r} (expected one of {LANGUAGES})")
    hotwords = obj.get("hotwords", [])
    if hotwords is None:
        hotwords = []
    if not isinstance(hotwords, list) or not all(isinstance(h, str) for h in hotwords):
        raise _fail(where, "field 'hotwords' must be a list of strings")
    subset = obj.get("subset")
    if subset is not None and not isinstance(subset, str):
        raise _fail(where, f"field 'subset' must be a string, got {type(subset).__name__}")

    first_pass = obj.get("first_pass")
    if first_pass is not None and not isinstance(first_pass, str):
        raise _fail(where, f"field 'first_pass' must be a string, got {type(first_pass).__name__}")

    audio_end_ms = obj.get("audio_end_ms")
    if audio_end_ms is not None and (isinstance(audio_end_ms, bool) or not isinstance(audio_end_ms, (int, float))
                                     or not audio_end_ms > 0):
        raise _fail(where, f"field 'audio_end_ms' must be a positive number of milliseconds, got {audio_end_ms!r}")

    if not os.path.isabs(path):
        path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(source)), path))
    return Example(
        key=str(key), audio_path=path, system=system, instruction=instruction,
        target=by_role["assistant"][0] if by_role["assistant"] else None, language=language, hotwords=tuple(hotwords),
        subset=subset, speech_length=speech_length, source=source, line=line,
        text_length=text_length, first_pass=first_pass,
        audio_end_ms=None if audio_end_ms is None else float(audio_end_ms),
    )


def read_manifest(path: str | os.PathLike, on_error: str = "raise",
                  stats: ManifestStats | None = None) -> list[Example]:
    """Reads one JSONL manifest (see `read_manifests`)."""
    return read_manifests([path], on_error=on_error, stats=stats)


def read_manifests(paths: Iterable[str | os.PathLike] | str | os.PathLike, on_error: str = "raise",
                   stats: ManifestStats | None = None, labelled: bool = True) -> list[Example]:
    """Reads JSONL manifests in order.

    Args:
      paths: one path or a sequence of paths.
      on_error: 'raise' -> the first bad line raises ManifestError; 'skip' -> each bad line
        is logged as one warning (naming file:line and the field) and dropped.
      stats: optional `ManifestStats` that receives line / example / skip counts.
      labelled: True -> an unlabelled line (no assistant message) is a bad line (ManifestError
        naming file:line); False -> it is read with target None (Best-RQ pre-training).
    Returns: the examples, in file then line order.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    stats = stats if stats is not None else ManifestStats()
    out: list[Example] = []
    for p in paths:
        src = os.fspath(p)
        from funasr_jax.data import shards  # a cycle (shards builds Examples): shard manifests read there

        if shards.is_shard_manifest(src):
            got = shards.read_shard_examples(src)
            stats.lines += len(got)
            out.extend(ex for ex in got if not (labelled and ex.target is None))
            n_unlab = sum(ex.target is None for ex in got) if labelled else 0
            if n_unlab:
                msg = (f"{src}: {n_unlab} unlabelled rows (no transcript); only a stage with "
                       "data.require_transcripts=false (bestrq) reads these")
                if on_error == "raise":
                    raise ManifestError(msg)
                stats.skipped += n_unlab
                stats.errors.append(msg)
                log.warning("skipping: %s", msg)
            continue
        try:
            f = open(src, encoding="utf-8")  # noqa: SIM115 (closed by the `with f:` below)
        except OSError as e:
            raise ManifestError(f"{src}: cannot open manifest ({e.strerror or e})") from None
        with f:
            for lineno, text in enumerate(f, start=1):
                stats.lines += 1
                try:
                    ex = parse_line(text, src, lineno)
                    if labelled and ex is not None and ex.target is None:
                        raise _fail(f"{src}:{lineno}", "no 'assistant' message: an unlabelled line (no transcript); "
                                    "only a stage with data.require_transcripts=false (bestrq) reads these")
                except ManifestError as e:
                    if on_error == "raise":
                        raise
                    stats.skipped += 1
                    stats.errors.append(str(e))
                    log.warning("skipping manifest line: %s", e)
                    continue
                if ex is not None:
                    out.append(ex)
    stats.examples = len(out)
    if stats.skipped:
        log.warning("read %d examples from %d manifest(s); skipped %d bad line(s)",
                    stats.examples, len(paths), stats.skipped)
    else:
        log.info("read %d examples from %d manifest(s)", stats.examples, len(paths))
    return out



# an audio error's message -> the short reason class counted in summaries (training's unreadable
# rows, the packer's skipped rows); the first key found in the lower-cased message wins
_AUDIO_REASONS = (("not found", "audio file not found"), ("cannot decode", "cannot decode audio"),
                  ("truncated", "truncated audio"), ("0 bytes", "empty audio file"), ("0 samples", "empty audio file"),
                  ("non-finite", "non-finite samples"), ("no feature frames", "too short for one feature frame"),
                  ("lfr frames but", "longer than its length bucket"), ("runs past", "cut past the recording"),
                  ("cannot read", "cannot read the file"))


def audio_error_reason(message: str, default: str) -> str:
    """The reason class of an audio error's `message` (`default` when none matches)."""
    text = message.lower()
    return next((reason for key, reason in _AUDIO_REASONS if key in text), default)


def example_audio(ex: Example, sample_rate: int = 16000):
    """`ex`'s waveform [S] float32 at `sample_rate`: its audio file (`audio.io.load_audio`), cut
    at `ex.audio_end_ms` when the line carries one (streaming-simulated copies). A row read from
    a shard (`ex.shard_ref`) decodes its record's bytes with the same decoder."""
    if ex.shard_ref is not None:
        from funasr_jax.data.shards import read_record  # a cycle: shards builds Examples

        try:
            _, data = read_record(*ex.shard_ref)
        except FileNotFoundError:
            raise AudioError(f"{ex.audio_path}: audio file not found (shard missing)") from None
        except (ValueError, OSError, RuntimeError) as e:  # a short / corrupt shard, an index past its end
            raise AudioError(f"{ex.audio_path}: cannot read shard record ({e})") from None
        wave = load_audio_bytes(data, ex.audio_path, sample_rate)
    else:
        wave = load_audio(ex.audio_path, sample_rate)
    if ex.audio_end_ms is not None:
        wave = wave[: int(round(ex.audio_end_ms * sample_rate / 1000.0))]
    return wave


def audio_present(ex: Example) -> bool:
    """Whether `ex`'s audio is there to read (its file, or its shard file); nothing is decoded."""
    return os.path.exists(ex.shard_ref[0] if ex.shard_ref is not None else ex.audio_path)


def require_jsonl(paths, tool: str) -> None:
    """ManifestError when one of `paths` is a shard manifest: `tool` rewrites JSONL lines, which a
    shard does not have (give it the JSONL the shards were packed from)."""
    from funasr_jax.data import shards  # a cycle (shards builds Examples)

    for p in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        if shards.is_shard_manifest(p):
            raise ManifestError(f"{p}: a shard manifest; {tool} rewrites JSONL manifest lines, so give it the "
                                "JSONL files the shards were packed from (and pack its output again)")
