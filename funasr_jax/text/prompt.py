"""ChatML prompt construction shared by training and inference (FunASR `fun_asr_nano/model.py`: `get_prompt`, `data_load_speech`, `forward`).

Layout of one sequence (ids; `0` marks the N audio placeholder rows the adaptor output replaces)::

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{instruction}   piece A (tokenized)
    0 0 ... 0                                                               N placeholders
    <|im_end|>\\n<|im_start|>assistant\\n{prev_text}                          piece B (tokenized)
    {target}<|im_end|>                                                      piece C (training only)

The `<|startofspeech|>` / `<|endofspeech|>` markers are never tokenized. Pieces are tokenized
separately, exactly as FunASR splits its source string at the speech marker (model.py
`data_load_speech`: `prev_text` is appended to the source string, so it shares piece B).
Labels follow the Hugging Face convention (aligned with `input_ids`; the loss shifts by one):
-100 everywhere except the ids of piece C.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from funasr_jax.models.batch import AUDIO_PLACEHOLDER_ID, IGNORE_INDEX

__all__ = [
    "AUDIO_PLACEHOLDER_ID",
    "DEFAULT_SYSTEM_PROMPT",
    "IGNORE_INDEX",
    "LANGUAGE_NAMES",
    "PromptIds",
    "FIRST_PASS_LABEL",
    "build_prompt",
    "PREVIOUS_LABEL",
    "instruction_text",
    "with_context",
    "with_first_pass",
]


DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."  # FunASR's default system turn

# Language code -> the Chinese name model.py puts into "语音转写成{name}". Codes not listed
# (and names such as 粤语) are used verbatim; 'cs' (code-switching) gives no language.
LANGUAGE_NAMES = {"zh": "中文", "en": "英文", "ja": "日文", "cs": None}

_HOTWORD_HEADER = (
    "请结合上下文信息，更加准确地完成语音转写任务。如果没有相关信息，我们会留空。\n\n\n"
    "**上下文信息：**\n\n\n"
)


# The first-pass (CTC) hypothesis line put in front of the instruction (recipe: "retrieved
# candidates + CTC hypothesis + audio go into the LLM prompt"). The label is the one of FunASR's
# training-time context prompt (FunASR `MultiContextPrompt`); the release's exact template is unconfirmed.
FIRST_PASS_LABEL = "一遍解码结果："
PREVIOUS_LABEL = "上文："  # contextual SFT: the previous segment's transcript (our layout)


class _Tokenizer(Protocol):
    im_end_id: int

    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class PromptIds:
    """One tokenized sequence.

    input_ids: [L] ids with `n_audio` placeholder zeros at [audio_start, audio_start + n_audio).
    labels: [L] HF-style labels (-100 = ignored), aligned with input_ids.
    """

    input_ids: list[int]
    labels: list[int]
    audio_start: int
    n_audio: int

    @property
    def num_target(self) -> int:
        """Number of supervised (label != -100) positions."""
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def instruction_text(language: str | None = None, hotwords: Sequence[str] = (), itn: bool = True) -> str:
    """The user instruction of model.py `get_prompt`.

    language: None, a code from LANGUAGE_NAMES ('zh', 'en', 'ja', 'cs') or a Chinese language
      name used verbatim (e.g. '粤语').
    """
    name = LANGUAGE_NAMES.get(language, language) if language is not None else None
    out = "语音转写" if name is None else f"语音转写成{name}"
    if not itn:
        out += "，不进行文本规整"
    return with_context(out + "：", hotwords=hotwords)


def with_context(instruction: str, *, hotwords: Sequence[str] = (), previous: str = "",
                 passages: Sequence[str] = ()) -> str:
    """`instruction` under the release's context header, or unchanged when there is no context.

    With hotwords only, this is exactly FunASR's `get_prompt` text (header + `热词列表：[a, b]\n`).
    The previous segment's transcript (`上文：…\n`, PREVIOUS_LABEL) and passages (one line each)
    come before the hotword list; those two lines are our own layout for contextual SFT (the
    recipe does not publish one), so a model must be trained with them to use them.
    """
    if not (len(hotwords) or previous or len(passages)):
        return instruction
    out = _HOTWORD_HEADER
    if previous:
        out += f"{PREVIOUS_LABEL}{previous}\n"
    out += "".join(f"{p}\n" for p in passages)
    if len(hotwords):
        out += f"热词列表：[{', '.join(hotwords)}]\n"
    return out + instruction


def with_first_pass(instruction: str, first_pass: str) -> str:
    """`instruction` with the first-pass hypothesis line `一遍解码结果：{first_pass}\n` in front."""
    return f"{FIRST_PASS_LABEL}{first_pass}\n{instruction}"


def prompt_pieces(system: str, instruction: str, prev_text: str = "") -> tuple[str, str]:
    """The two source text pieces around the audio (before, after)."""
    before = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{instruction}"
    after = f"<|im_end|>\n<|im_start|>assistant\n{prev_text}"
    return before, after


def build_prompt(tokenizer: _Tokenizer, *, system: str, instruction: str, n_audio: int,
                 prev_text: str = "", target: str | None = None, prefix_ids: Sequence[int] = ()) -> PromptIds:
    """Tokenizes one ChatML ASR turn with `n_audio` placeholder ids.

    Args:
      tokenizer: object with `encode(text) -> list[int]` that maps `<|im_start|>` /
        `<|im_end|>` to single ids and adds no BOS.
      system: system prompt (FunASR's default is DEFAULT_SYSTEM_PROMPT).
      instruction: user text before the audio (see `instruction_text`).
      n_audio: number of audio rows N = audio_token_count(T) (>= 0).
      prev_text: text already emitted (streaming continuation), after the assistant header.
      prefix_ids: token ids already emitted (the streaming decoder's stable prefix), appended
        after the assistant header (and `prev_text`) as they are, so the continuation starts
        exactly where the earlier partial's tokens left off.
      target: transcript; when given, `"{target}<|im_end|>"` is appended and supervised.
    """
    if n_audio < 0:
        raise ValueError(f"n_audio must be >= 0, got {n_audio}")
    before, after = prompt_pieces(system, instruction, prev_text)
    ids = list(tokenizer.encode(before))
    audio_start = len(ids)
    ids += [AUDIO_PLACEHOLDER_ID] * n_audio
    ids += list(tokenizer.encode(after)) + [int(t) for t in prefix_ids]
    labels = [IGNORE_INDEX] * len(ids)
    if target is not None:
        tgt = list(tokenizer.encode(f"{target}<|im_end|>"))
        ids += tgt
        labels += tgt
    return PromptIds(input_ids=ids, labels=labels, audio_start=audio_start, n_audio=n_audio)
