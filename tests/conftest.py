import pytest

RESOLVER_TEST = "test_colab_requirements_resolve_for_colab_platform"
_STARTED: list = []  # the module whose background resolution was started


@pytest.hookimpl(trylast=True)  # after -m / -k deselection: only a test that will run starts it
def pytest_collection_modifyitems(session, config, items):
    """When the Colab resolver test is selected, start its download-bound pip run now, in the background, and move
    the test to the end of the run, where it only collects the result: its wall time overlaps the CPU-bound
    tests instead of adding to them (tests/test_colab_requirements.py)."""
    for i, item in enumerate(items):
        if item.name == RESOLVER_TEST and not item.get_closest_marker("skip"):
            item.module.start_resolution()
            _STARTED.append(item.module)
            items.append(items.pop(i))
            break


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
