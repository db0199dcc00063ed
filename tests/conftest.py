import pytest


@pytest.fixture(scope="session")
def smol():
    """(model with a fresh LoRA adapter, tokenizer): the real SmolLM2-135M on CPU, loaded once per session."""
    from helpers import config, training

    cfg = config.preset("smoke")
    return training.load_model(cfg, "hf")
