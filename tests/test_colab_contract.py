"""Static contract check of the Unsloth / vLLM APIs the Colab notebooks call.

The GPU packages cannot be installed on a CPU machine, so this test downloads the
wheels pinned in requirements-colab.txt (``pip download --no-deps``, cached in
~/.cache/logprob-curriculum/wheels) and reads their sources with ``ast``. Nothing
from these wheels is ever imported.

CONTRACT lists (module path inside the wheel, qualified name, keyword arguments we pass).
The wheel is chosen by the first path component (``unsloth/...`` -> the pinned unsloth
wheel). A method missing from a class is looked up in its base classes, found by name
anywhere in the same wheel. For a class without ``__init__`` (vLLM's SamplingParams is
a msgspec.Struct) the annotated class fields are its keyword arguments. A keyword is
accepted only when it is a named parameter: ``**kwargs`` does not count, because
Unsloth forwards unknown keywords to other functions that may not accept them.

MODEL_ATTRIBUTES lists attributes Unsloth sets on the model at load time
(``model.fast_generate = ...``); they are checked as attribute assignments.

Skipped only when the package registry cannot be reached and the wheels are not cached.
Run with ``pytest -s`` to see the real signatures.
"""

from __future__ import annotations

import ast
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

import pytest

# Needs the package registry when the wheel cache is empty (marker registered in pyproject.toml).
pytestmark = pytest.mark.network

CONTRACT: list[tuple[str, str, list[str]]] = [
    ("unsloth/models/loader.py", "FastLanguageModel.from_pretrained",
     ["model_name", "max_seq_length", "load_in_4bit", "fast_inference",
      "max_lora_rank", "gpu_memory_utilization", "dtype"]),
    ("unsloth/models/loader.py", "FastLanguageModel.get_peft_model",
     ["model", "r", "target_modules", "lora_alpha", "use_gradient_checkpointing", "random_state"]),
    # model.save_lora / model.load_lora are functools.partial(<these>, model).
    ("unsloth_zoo/vllm_utils.py", "save_lora", ["model", "save_directory"]),
    ("unsloth_zoo/vllm_utils.py", "load_lora", ["model", "save_directory", "load_tensors"]),
    ("vllm/sampling_params.py", "SamplingParams",
     ["temperature", "top_p", "max_tokens", "n", "stop", "seed", "logprobs"]),
    # helpers.writing.load_judge puts the judge (loaded by Unsloth) in inference mode.
    ("unsloth/models/llama.py", "FastLlamaModel.for_inference", ["model"]),
    # With fast_inference=True, model.fast_generate is vLLM's LLM.generate.
    ("vllm/entrypoints/llm.py", "LLM.generate", ["sampling_params", "lora_request", "use_tqdm"]),
    # helpers.export on Unsloth: unsloth/save.py patch_saving_functions binds these to the model (text models).
    ("unsloth/save.py", "unsloth_generic_save_pretrained_merged", ["save_directory", "tokenizer", "save_method"]),
    ("unsloth/save.py", "unsloth_save_pretrained_gguf", ["save_directory", "tokenizer", "quantization_method"]),
    ("unsloth/save.py", "unsloth_generic_push_to_hub_merged", ["repo_id", "tokenizer", "save_method", "token"]),
]

MODEL_ATTRIBUTES: list[tuple[str, str]] = [
    ("unsloth/models/llama.py", "fast_generate"),
    ("unsloth/models/llama.py", "save_lora"),
    ("unsloth/models/llama.py", "load_lora"),
]

ROOT = Path(__file__).resolve().parents[1]
COLAB_REQUIREMENTS = ROOT / "requirements-colab.txt"
WHEEL_CACHE = Path.home() / ".cache" / "logprob-curriculum" / "wheels"

# Top-level package inside a wheel -> project name in requirements-colab.txt.
PROJECT_OF_PACKAGE = {"unsloth": "unsloth", "unsloth_zoo": "unsloth-zoo", "vllm": "vllm"}

# Same target as tests/test_colab_requirements.py: Colab's CPython 3.12 on manylinux x86_64.
TARGET_ARGS = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
               "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
               "--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64",
               "--platform", "any"]
DOWNLOAD_TIMEOUT_S = 900

NETWORK_ERROR_MARKERS = (
    "NewConnectionError", "Failed to establish a new connection", "Max retries exceeded",
    "Temporary failure in name resolution", "Name or service not known", "Network is unreachable",
    "No route to host", "Connection refused", "ConnectTimeoutError", "ProxyError", "Could not fetch URL",
)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_pins() -> dict[str, str]:
    """Pins of requirements-colab.txt and requirements-colab-nodeps.txt (Unsloth is in the second)."""
    pins = {}
    files = (COLAB_REQUIREMENTS, COLAB_REQUIREMENTS.with_name("requirements-colab-nodeps.txt"))
    for raw in (line for path in files for line in path.read_text(encoding="utf-8").splitlines()):
        text = raw.split("#", 1)[0].strip()
        if "==" in text:
            name, version = text.split("==", 1)
            pins[normalize(name)] = version.strip()
    return pins


@lru_cache(maxsize=None)
def pip_env() -> dict[str, str]:
    """The machine's index and TLS settings, without its pip config's constraints or local links.

    Same approach as tests/test_colab_requirements.py: config files are switched off and
    only index-url / cert / client-cert / trusted-host / proxy are carried over.
    """
    env = dict(os.environ)
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                            capture_output=True, text=True, env=env, timeout=60)
    for line in listed.stdout.splitlines():
        match = re.match(r"^[^.]*\.([a-z-]+)='(.*)'$", line.strip())
        if match and match[1] in ("index-url", "cert", "client-cert", "trusted-host", "proxy"):
            env.setdefault("PIP_" + match[1].upper().replace("-", "_"), match[2])
    env["PIP_CONFIG_FILE"] = os.devnull
    for key in ("PIP_CONSTRAINT", "PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX",
                "PIP_REQUIREMENT", "PIP_REQUIRE_VIRTUALENV"):
        env.pop(key, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def cached_wheel(project: str, version: str) -> Path | None:
    stem = re.sub(r"[-_.]+", "_", project).lower()
    for path in sorted(WHEEL_CACHE.glob("*.whl")):
        name, _, rest = path.name.partition("-")
        if re.sub(r"[-_.]+", "_", name).lower() == stem and rest.startswith(f"{version}-"):
            return path
    return None


# package -> reason it could not be downloaded (registry unreachable), so that the other
# tests needing the same wheel skip at once instead of retrying.
UNAVAILABLE: dict[str, str] = {}


@lru_cache(maxsize=None)
def wheel_for(package: str) -> Path:
    """The pinned wheel holding top-level `package`, downloaded once into WHEEL_CACHE."""
    if package in UNAVAILABLE:
        pytest.skip(UNAVAILABLE[package])
    project = PROJECT_OF_PACKAGE[package]
    version = colab_pins().get(project)
    assert version, f"{project} is not pinned in {COLAB_REQUIREMENTS.name}"
    found = cached_wheel(project, version)
    if found:
        return found
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WHEEL_CACHE) as dest:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               *TARGET_ARGS, "--retries", "2", "--progress-bar", "off", "--dest", dest,
               f"{project}=={version}"]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, env=pip_env(),
                                    timeout=DOWNLOAD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"downloading {project}=={version} took more than {DOWNLOAD_TIMEOUT_S}s")
        output = result.stdout + result.stderr
        if result.returncode != 0:
            last = "\n".join(output.strip().splitlines()[-15:])
            if any(marker in output for marker in NETWORK_ERROR_MARKERS):
                UNAVAILABLE[package] = f"package registry unreachable, {project}=={version} not cached:\n{last}"
                pytest.skip(UNAVAILABLE[package])
            pytest.fail(f"pip download {project}=={version} failed:\n{last}")
        wheels = list(Path(dest).glob("*.whl"))
        assert len(wheels) == 1, f"expected one wheel for {project}=={version}, got {wheels}"
        final = WHEEL_CACHE / wheels[0].name
        shutil.move(str(wheels[0]), final)
    return final


@lru_cache(maxsize=None)
def parsed(package: str, module_path: str) -> ast.Module:
    with zipfile.ZipFile(wheel_for(package)) as wheel:
        return ast.parse(wheel.read(module_path).decode("utf-8"), filename=module_path)


@lru_cache(maxsize=None)
def classes_in_wheel(package: str) -> dict[str, list[tuple[str, ast.ClassDef]]]:
    """Class name -> [(module path, ClassDef)] for every module of the wheel's package."""
    index: dict[str, list[tuple[str, ast.ClassDef]]] = {}
    with zipfile.ZipFile(wheel_for(package)) as wheel:
        names = [n for n in wheel.namelist() if n.startswith(f"{package}/") and n.endswith(".py")]
    for name in names:
        try:
            tree = parsed(package, name)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                index.setdefault(node.name, []).append((name, node))
    return index


def is_overload(node: ast.AST) -> bool:
    return any((isinstance(d, ast.Name) and d.id == "overload")
               or (isinstance(d, ast.Attribute) and d.attr == "overload")
               for d in getattr(node, "decorator_list", []))


def member(body: list[ast.stmt], name: str) -> ast.AST | None:
    """The last definition of `name` in a body, preferring non-@overload functions."""
    found = [n for n in body
             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name]
    real = [n for n in found if not is_overload(n)]
    return (real or found or [None])[-1]


def base_names(cls: ast.ClassDef) -> list[str]:
    names = []
    for base in cls.bases:
        if isinstance(base, ast.Name):
            names.append(base.id)
        elif isinstance(base, ast.Attribute):
            names.append(base.attr)
    return names


def method_of(package: str, module_path: str, cls: ast.ClassDef, name: str,
              seen: frozenset = frozenset()) -> tuple[str, str, ast.AST] | None:
    """(module path, owner class, def) of `name` on `cls`, following base classes by name."""
    node = member(cls.body, name)
    if node is not None:
        return module_path, cls.name, node
    for base in base_names(cls):
        if base in seen:
            continue
        for base_path, base_cls in classes_in_wheel(package).get(base, []):
            hit = method_of(package, base_path, base_cls, name, seen | {cls.name})
            if hit:
                return hit
    return None


def resolve(module_path: str, qualname: str) -> tuple[str, str, ast.AST]:
    package = module_path.split("/", 1)[0]
    tree = parsed(package, module_path)
    head, *rest = qualname.split(".")
    node = member(tree.body, head)
    assert node is not None, f"{head} is not defined at top level of {module_path}"
    if not rest:
        return module_path, head, node
    assert len(rest) == 1 and isinstance(node, ast.ClassDef), f"cannot resolve {qualname}"
    hit = method_of(package, module_path, node, rest[0])
    assert hit is not None, f"{qualname} not found in {module_path} or its base classes"
    where, owner, found = hit
    return where, f"{owner}.{rest[0]}", found


def accepted_keywords(node: ast.AST) -> tuple[list[str], bool, str]:
    """(keyword-capable parameter names, has **kwargs, one-line signature)."""
    if isinstance(node, ast.ClassDef):
        init = member(node.body, "__init__")
        if init is None:  # dataclass / msgspec.Struct style: annotated fields
            fields = [n.target.id for n in node.body
                      if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
                      and not n.target.id.startswith("_")]
            return fields, False, f"class {node.name}(...): fields " + ", ".join(fields)
        node = init
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    args = node.args
    names = [a.arg for a in args.args] + [a.arg for a in args.kwonlyargs]
    stub = copy.copy(node)
    stub.body = [ast.Expr(ast.Constant(...))]
    stub.decorator_list = []
    signature = ast.unparse(stub).splitlines()[0]
    return names, args.kwarg is not None, signature


@pytest.mark.parametrize(("module_path", "qualname", "kwargs"), CONTRACT,
                         ids=[f"{m.split('/')[0]}:{q}" for m, q, _ in CONTRACT])
def test_contract_call_accepts_keywords(module_path, qualname, kwargs):
    where, owner, node = resolve(module_path, qualname)
    names, has_var_kw, signature = accepted_keywords(node)
    package = module_path.split("/", 1)[0]
    print(f"\n[{wheel_for(package).name}] {where}: {owner}\n    {signature}")
    missing = [k for k in kwargs if k not in names]
    assert not missing, (
        f"{qualname} ({where}) has no named parameter(s) {missing}"
        f"{' (it takes **kwargs, which may forward or drop them)' if has_var_kw else ''}.\n"
        f"Signature: {signature}"
    )


@pytest.mark.parametrize(("module_path", "attribute"), MODEL_ATTRIBUTES,
                         ids=[a for _, a in MODEL_ATTRIBUTES])
def test_model_attribute_is_assigned(module_path, attribute):
    package = module_path.split("/", 1)[0]
    tree = parsed(package, module_path)
    assignments = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Attribute) and t.attr == attribute for t in node.targets)
    ]
    assert assignments, f"no `<obj>.{attribute} = ...` assignment in {module_path}"
    for node in assignments:
        print(f"\n{module_path}:{node.lineno}: {ast.unparse(node)}")


# ---------------------------------------------------------------------------------------
# The contract must cover what helpers/ really calls: the keywords are read from the source.
HELPER_CALLS = {  # callee as written in helpers/ -> CONTRACT entry it must match
    "FastLanguageModel.from_pretrained": "FastLanguageModel.from_pretrained",
    "FastLanguageModel.get_peft_model": "FastLanguageModel.get_peft_model",
    "SamplingParams": "SamplingParams",
    "model.fast_generate": "LLM.generate",
    "model.load_lora": "load_lora",
    "model.save_lora": "save_lora",
    "FastLanguageModel.for_inference": "FastLlamaModel.for_inference",
    "model.save_pretrained_merged": "unsloth_generic_save_pretrained_merged",
    "model.save_pretrained_gguf": "unsloth_save_pretrained_gguf",
    "model.push_to_hub_merged": "unsloth_generic_push_to_hub_merged",
}


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def test_contract_covers_every_unsloth_and_vllm_call_in_helpers():
    contract = {qual: set(kwargs) for _, qual, kwargs in CONTRACT}
    seen = {}
    for path in sorted((ROOT / "helpers").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _dotted(node.func) in HELPER_CALLS:
                name = _dotted(node.func)
                used = {k.arg for k in node.keywords if k.arg}
                entry = HELPER_CALLS[name]
                missing = used - contract[entry]
                assert not missing, f"{path.name}:{node.lineno} passes {sorted(missing)} to {name}: add them to CONTRACT"
                seen[name] = sorted(used)
    print("\nhelpers' Unsloth/vLLM calls:", seen)
    assert {"FastLanguageModel.from_pretrained", "FastLanguageModel.get_peft_model", "SamplingParams",
            "model.fast_generate"} <= set(seen)


# ---------------------------------------------------------------------------------------
# Behaviour, not names: what helpers/ relies on in the pinned Unsloth source. Each entry names the wheel file,
# the function, the lines that must still say so, and the helper code that depends on it. If a new pin changes
# any of these, the test fails and the helper must be re-checked.
UNSLOTH_BEHAVIOURS = [
    ("unsloth/models/llama.py", "LlamaModel_fast_forward", [r"past_key_values_length = past_key_values\[0\]\[0\]\.shape\[2\]"],
     "no KV cache on the fast forward: an empty DynamicCache raises KeyError, so helpers.logprob never shares a "
     "prefix cache on an Unsloth model (score_encoded: share_prefix off)"),
    ("unsloth/models/llama.py", "LlamaAttention_fast_forward",
     [r"cos, sin = rotary_emb\(V, seq_len = kv_seq_len\)", r"Q, K = fast_rope_embedding\(Q, K, cos, sin\)"],
     "RoPE ignores position_ids (positions are 0..n-1 of the input): a cached prefix would get wrong positions"),
    ("unsloth/models/llama.py", "CausalLM_fast_forward",
     [r"causal_mask = xformers\.attn_bias\.LowerTriangularMask\(\)",
      r'os\.environ\.get\("UNSLOTH_RETURN_HIDDEN_STATES", "0"\) == "1"', r"logits = hidden_states,"],
     "only the top-level forward supplies the causal mask, and with UNSLOTH_RETURN_HIDDEN_STATES=1 it returns "
     "hidden states as .logits: helpers.logprob._hidden_states scores through it and applies the LM head"),
    ("unsloth/models/llama.py", "LlamaModel_fast_forward",
     [r"elif self\.training and os\.environ\.get\(\"UNSLOTH_KEEP_PADDING\", \"0\"\) != '1':\s+attention_mask = None"],
     "in training mode the attention mask is dropped: scoring right-padded batches relies on the causal mask only"),
    ("unsloth/models/rl.py", "_patch_trl_rl_trainers",
     [r"if loss_type\.lower\(\) == 'dr_grpo':.*elif scale_rewards == True:.*scale_rewards = False"],
     "Unsloth's GRPOConfig forces scale_rewards=False for dr_grpo: helpers.training.effective_args reads the "
     "trainer's arguments back, and helpers.ablations.effective_variant predicts it"),
    ("unsloth_zoo/rl_replacements.py", "grpo_accumulated_loss", [r"if n_chunks == -1: n_chunks = bsz"],
     "the GRPO loss is computed one sequence per chunk, so 'bnpo' equals 'grpo' on Unsloth "
     "(helpers.ablations.coinciding_variants skips the duplicate)"),
    ("unsloth_zoo/rl_replacements.py", "grpo_compute_loss",
     [r'elif loss_type == "bnpo":\s+loss = \(loss_i \* mask\)\.sum\(\) / mask\.sum\(\)'],
     "bnpo normalizes by the tokens of the chunk it is given (one sequence: see grpo_accumulated_loss)"),
    ("unsloth_zoo/dataset_utils.py", "sft_prepare_dataset",
     [r'raise RuntimeError\("Unsloth: You must specify a `formatting_func`"\)',
      r'if "labels" in column_names:.*do_tokenize = False'],
     "prompt/completion datasets are rejected, a dataset with labels is used as it is: helpers.data."
     "tokenized_sft_dataset gives the Unsloth cold start input_ids + labels"),
    ("unsloth_zoo/training_utils.py", "prepare_model_for_training", [r"mixed_precision_dtype = torch\.float32"],
     "LoRA weights are kept in fp32: helpers.training.lora_disk_estimate counts 4 bytes per LoRA parameter"),
    ("unsloth/models/llama.py", "LlamaAttention_fast_forward", [r"Q, K, V = self\.apply_qkv\(self, hidden_states\)"],
     "patched attention needs apply_qkv, set only on models Unsloth loads: helpers.writing.load_judge loads the "
     "judge through Unsloth on that backend"),
    ("unsloth_zoo/vllm_utils.py", "load_lora",
     [r"LoRARequest\(str\(LORA_REQUEST_ID\), LORA_REQUEST_ID, save_directory\)", r"LORA_REQUEST_ID \+= 1"],
     "every load_lora call is a new LoRARequest id, read from its directory: notebook 05 switches adapters "
     "(start, SFT arms, subsets) in one vLLM session and vLLM never serves an adapter cached under another path "
     "(helpers.beyond passes the current adapter's directory to each generation)"),
    ("unsloth/kernels/utils.py", "get_lora_parameters",
     [r'if getattr\(proj, "disable_adapters", True\) or proj\.merged:\s+return W, getattr\(W, "quant_state", None\), '
      r"None, None, None"],
     "the fast LoRA kernels drop the LoRA when PEFT's disable_adapters flag is set: `with model.disable_adapter()` "
     "scores the base model, which notebook 05's implicit reward (helpers.rerank.reference_scope) needs; "
     "selfcheck.check_reference checks it on the user's GPU"),
]


def _function_source(package: str, module_path: str, name: str) -> str:
    with zipfile.ZipFile(wheel_for(package)) as wheel:
        source = wheel.read(module_path).decode("utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return ast.get_source_segment(source, node) or ""
    raise AssertionError(f"{module_path} has no function {name}")


@pytest.mark.parametrize(("module_path", "function", "patterns", "why"), UNSLOTH_BEHAVIOURS,
                         ids=[f"{m.split('/')[-1]}:{f}:{i}" for i, (m, f, _, _) in enumerate(UNSLOTH_BEHAVIOURS)])
def test_pinned_unsloth_behaviour_helpers_rely_on(module_path, function, patterns, why):
    package = module_path.split("/", 1)[0]
    body = _function_source(package, module_path, function)
    for pattern in patterns:
        assert re.search(pattern, body, re.DOTALL), (
            f"{wheel_for(package).name} {module_path}:{function} no longer matches {pattern!r}.\n"
            f"helpers rely on it: {why}. Re-read the new source and adapt the helper.")
    print(f"\n{module_path}:{function}: {why}")


def test_is_bf16_supported_is_only_fixed_once_unsloth_is_imported():
    """Why helpers.runtime decides bf16 from the compute capability: unsloth/__init__.py re-patches
    torch.cuda.is_bf16_supported (which counts emulation since torch 2.4, True on a T4) only at import."""
    with zipfile.ZipFile(wheel_for("unsloth")) as wheel:
        init = wheel.read("unsloth/__init__.py").decode("utf-8")
    assert "SUPPORTS_BFLOAT16 = (major_version >= 8)" in init and "including_emulation" in init
    assert "torch.cuda.is_bf16_supported = is_bf16_supported" in init


PROTOBUF_IMPORT = re.compile(r"^\s*(?:import\s+(?:google\.protobuf|protobuf)\b|from\s+google\.protobuf\b|"
                             r"from\s+google\s+import\s+protobuf\b|from\s+protobuf\b)", re.M)


@pytest.mark.parametrize("package", ["unsloth_zoo", "unsloth"])
def test_unsloth_never_imports_protobuf_so_its_protobuf_pin_can_be_skipped(package):
    """unsloth_zoo 2025.6.8 declares protobuf<4.0.0; requirements-colab-nodeps.txt installs it with --no-deps so
    that Colab's protobuf (5.29) is not downgraded to 3.20 for it. That is sound only while neither wheel imports
    protobuf: no `import google.protobuf` / `from google.protobuf` anywhere in their sources, nor a dynamic
    importlib.import_module of it."""
    wheel = wheel_for(package)
    offenders = []
    with zipfile.ZipFile(wheel) as archive:
        sources = [n for n in archive.namelist() if n.endswith(".py")]
        for name in sources:
            text = archive.read(name).decode("utf-8", "replace")
            for match in PROTOBUF_IMPORT.finditer(text):
                offenders.append(f"{name}: {match.group(0).strip()}")
            if re.search(r"import_module\(\s*['\"](?:google\.)?protobuf", text):
                offenders.append(f"{name}: import_module(protobuf)")
    assert len(sources) > 10, f"{wheel.name}: no sources read"
    assert not offenders, f"{wheel.name} imports protobuf, so its declared bound matters:\n" + "\n".join(offenders)


def test_protobuf_import_pattern_catches_imports_and_nothing_else():
    for line in ("import google.protobuf", "from google.protobuf import descriptor_pb2", "  from google import protobuf",
                 "import protobuf as pb", "from google.protobuf.internal import builder"):
        assert PROTOBUF_IMPORT.search(line), line
    for line in ("# needs protobuf<4", "x = 'google.protobuf'", "import googleapiclient", "from google.colab import drive"):
        assert not PROTOBUF_IMPORT.search(line), line
