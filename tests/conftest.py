import pytest

RESOLVER_MODULE = "test_colab_requirements.py"
_STARTED: list = []  # the module whose background resolutions were started


@pytest.hookimpl(trylast=True)  # after -m / -k deselection: only tests that will run start it
def pytest_collection_modifyitems(session, config, items):
    """When a Colab resolver test (marked `network` in tests/test_colab_requirements.py) is selected, start the
    index-bound pip runs now, in the background, and move those tests to the end of the run, where they only collect
    the results: their wall time overlaps the CPU-bound tests instead of adding to them."""
    resolver = [item for item in items if item.fspath.basename == RESOLVER_MODULE
                and item.get_closest_marker("network") and not item.get_closest_marker("skip")]
    if resolver:
        resolver[0].module.start_resolution()
        _STARTED.append(resolver[0].module)
        items[:] = [item for item in items if item not in resolver] + resolver


def pytest_sessionfinish(session, exitstatus):
    for module in _STARTED:
        module.stop_resolution()


@pytest.fixture(scope="session")
def smol():
    """(model with a fresh LoRA adapter, tokenizer): the real SmolLM2-135M on CPU, loaded once per session."""
    from helpers import config, training

    cfg = config.preset("smoke")
    return training.load_model(cfg, "hf")


class CharTokenizer:
    """A tokenizer without a model: one token per character, ids = code points, offsets exact. Enough for
    encode_pair, prompt_text and the step/pool bookkeeping in fast tests."""
    bos_token_id = eos_token_id = pad_token_id = 0

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        enc = {"input_ids": [ord(ch) for ch in text]}
        if return_offsets_mapping:
            enc["offset_mapping"] = [(i, i + 1) for i in range(len(text))]
        return enc

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + ("<assistant>" if add_generation_prompt else "")


@pytest.fixture
def char_tok():
    """A CharTokenizer (see its docstring)."""
    return CharTokenizer()


class FakeAdapterModel:
    """Stands for a PEFT model: `disable_adapter()` is a context manager that turns `adapter_on` off inside it
    (fake scorers read the flag to return the policy's or the reference's values)."""

    def __init__(self):
        self.adapter_on = True

    def disable_adapter(self):
        model = self

        class Off:
            def __enter__(self):
                model.adapter_on = False

            def __exit__(self, *exc):
                model.adapter_on = True

        return Off()


@pytest.fixture
def fake_model_cls():
    """The FakeAdapterModel class (call it for a fresh model)."""
    return FakeAdapterModel
