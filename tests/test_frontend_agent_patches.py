"""Every patch of the frontend agent (runtime/frontend_agent) against the pinned TorchServe jar, without a server.

``humanserve.agent.PatchCheck`` does what the agent does when the frontend starts: it applies each fix's
patches to the classes of the jar on its class path (each must find the call it rewrites where it expects
it), then defines and links each patched class, so that the JVM's verifier checks the helper calls. A
TorchServe upgrade that moves one call fails here, in a second, rather than in the serving tests. The
serving tests (tests/test_frontend_agent.py, tests/test_sequences_serving.py, tests/test_tracking_serving.py)
show what each fix changes for a client.
"""

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from runtime.torchserve import AGENT_JAR

AGENT_SOURCES = Path(__file__).resolve().parents[1] / "runtime" / "frontend_agent"
# Each fix is a *Fix.java; Agent.FIXES must list every one, or the agent would leave it out silently.
FIXES = sorted(source.stem for source in AGENT_SOURCES.glob("*Fix.java"))
VERDICT = re.compile(r"^(\w+): (ok|FAILED)$", re.MULTILINE)


def frontend_jar() -> Path | None:
    """TorchServe's frontend as the venv pins it (the torchserve package carries it), or None."""
    spec = importlib.util.find_spec("ts")
    if spec is None or not spec.submodule_search_locations:
        return None
    jar = Path(next(iter(spec.submodule_search_locations))) / "frontend" / "model-server.jar"
    return jar if jar.exists() else None


@pytest.fixture(scope="module")
def java() -> str:
    found = shutil.which("java")
    if found is None:
        pytest.skip("no java on the PATH: the agent's check needs a JVM")
    if not AGENT_JAR.exists():
        pytest.skip(f"{AGENT_JAR} was not built: make setup needs a JDK (javac, jar) for it")
    return found


@pytest.fixture(scope="module")
def pinned_jar() -> Path:
    jar = frontend_jar()
    if jar is None:
        pytest.skip("no TorchServe frontend jar (ts/frontend/model-server.jar) in this environment")
    return jar


def patch_check(java: str, *class_path: Path) -> tuple[int, dict[str, str], str]:
    """PatchCheck's exit status, each fix's verdict, and its report."""
    done = subprocess.run(
        [java, "-cp", ":".join(str(p) for p in (AGENT_JAR, *class_path)), "humanserve.agent.PatchCheck"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Could not find or load main class" not in done.stderr, (
        f"{AGENT_JAR} predates PatchCheck: make setup rebuilds it"
    )
    return done.returncode, dict(VERDICT.findall(done.stdout)), done.stdout


def test_every_fix_finds_the_bytecode_it_expects_in_the_pinned_jar(java, pinned_jar):
    status, verdicts, report = patch_check(java, pinned_jar)
    assert sorted(verdicts) == FIXES, report
    assert set(verdicts.values()) == {"ok"}, report
    assert status == 0, report
    patched = [line for line in report.splitlines() if " becomes " in line]
    assert len(patched) == 19, report  # 1 + 1 + 6 + 1 + 7 + 3 calls rewritten (see the README's table)
    assert "does not verify" not in report and "not applied" not in report, report


def stub_sequence_batching(tmp_path: Path, call: str) -> Path:
    """A jar with a SequenceBatching whose startEventDispatcher has the pinned one's shape (aload_0; getfield;
    invokevirtual; return), calling ``Thread.<call>()``: the check must tell the call, not just the shape."""
    javac = shutil.which("javac")
    if javac is None:
        pytest.skip("no javac on the PATH: the stub class cannot be compiled")
    source = tmp_path / "src" / "org" / "pytorch" / "serve" / "wlm" / "SequenceBatching.java"
    source.parent.mkdir(parents=True)
    source.write_text(
        "package org.pytorch.serve.wlm;\n"
        "public class SequenceBatching {\n"
        "    private Thread eventDispatcher = new Thread();\n"
        f"    public void startEventDispatcher() {{ eventDispatcher.{call}(); }}\n"
        "}\n"
    )
    classes = tmp_path / "classes"
    subprocess.run([javac, "--release", "11", "-d", str(classes), str(source)], check=True, timeout=120)
    return classes


@pytest.mark.parametrize("call, verdict", [("start", "ok"), ("run", "FAILED")])
def test_the_check_fails_where_the_call_a_fix_expects_is_not_there(java, pinned_jar, tmp_path, call, verdict):
    # The stub comes first on the class path, so it hides the pinned jar's SequenceBatching, as another
    # TorchServe version's would.
    status, verdicts, report = patch_check(java, stub_sequence_batching(tmp_path, call), pinned_jar)
    assert verdicts["SequenceRetryFix"] == verdict, report
    if verdict == "FAILED":
        assert "startEventDispatcher does not call java/lang/Thread.start()V where expected" in report
    assert verdicts["IdleSequenceFix"] == "FAILED", report  # the stub has no SequenceBatching(Model) to patch
    assert "no method <init>(Lorg/pytorch/serve/wlm/Model;)V" in report
    assert verdicts["ResponseDecoderFix"] == "ok", report  # the other classes are the pinned jar's
    assert status == 1, report


def test_the_check_refuses_to_pass_without_a_frontend_jar(java):
    done = subprocess.run(
        [java, "-cp", str(AGENT_JAR), "humanserve.agent.PatchCheck"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no TorchServe frontend on the class path" in done.stderr
    assert not VERDICT.findall(done.stdout)
