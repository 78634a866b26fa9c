"""The chat template lm-eval's task building calls, as its HFLM applies it: the tokenizer's template, a generation
prompt unless the prompt continues the assistant's last turn (a task's gen_prefix), and the system turn dropped when
the template refuses one."""

from __future__ import annotations

from collections.abc import Callable

from evalkit.errors import EvalkitError


def chat_template(lm) -> Callable[..., str]:
    """HFLM.apply_chat_template over the loaded tokenizer; one without a template is one error line."""
    import jinja2

    tokenizer = lm.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise EvalkitError("apply_chat_template=true needs a tokenizer with a chat template, and this model's has "
                           "none; allowed with it: apply_chat_template=false")

    def render(chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        options = dict(tokenize=False, add_generation_prompt=add_generation_prompt,
                       continue_final_message=not add_generation_prompt)
        try:
            return tokenizer.apply_chat_template(chat_history, **options)
        except jinja2.exceptions.TemplateError:  # HFLM's fallback: the template takes no system turn
            return tokenizer.apply_chat_template([m for m in chat_history if m["role"] != "system"], **options)

    return render


def tokenizer_name(tokenizer) -> str:
    """HFLM's tokenizer_name (part of lm-eval's request-cache key)."""
    return tokenizer.name_or_path.replace("/", "__")
