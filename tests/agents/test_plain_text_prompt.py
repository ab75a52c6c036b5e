"""A plain-text `generate` prompt to a chat model goes through its chat template (fed raw, SmolLM2-Instruct
answers many prompts with nothing); `plain="raw"` and models without a template keep the raw completion."""

from k1.agents.model import generation_reply, has_chat_template

TEMPLATE = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


def _member(template):
    from k1.pool.testing import tiny_hf_member

    m = tiny_hf_member()
    m.tokenizer.chat_template = template
    return m


def test_a_plain_text_prompt_to_a_chat_model_is_sent_as_one_user_message():
    m = _member(TEMPLATE)
    assert has_chat_template(m)
    chat = generation_reply(m, {"prompt": "hi", "max_tokens": 2})
    raw = generation_reply(m, {"prompt": "hi", "max_tokens": 2}, plain="raw")
    templated = m.render([{"role": "user", "content": "hi"}])
    assert templated == "<user>hi<assistant>"
    assert chat["prompt_tokens"] == len(m.encode(templated))  # what the model read: the templated turn
    assert raw["prompt_tokens"] < chat["prompt_tokens"]


def test_a_model_without_a_chat_template_gets_the_raw_text():
    m = _member(None)
    assert not has_chat_template(m)
    a = generation_reply(m, {"prompt": "hi", "max_tokens": 2})
    b = generation_reply(m, {"prompt": "hi", "max_tokens": 2}, plain="raw")
    assert a["prompt_tokens"] == b["prompt_tokens"] and "error" not in a
