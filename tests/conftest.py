import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

# The test models are tiny: one intra-op thread per process is much faster than two (20.9 vs 0.88 steps/s measured
# for the demo model on the 2-core dev machine with another process busy), and pytest shares the cores with nothing.
import pytest, torch
torch.set_num_threads(1)

if 'MUTANT_UNDER_TEST' in os.environ:  # mutation testing (.ci/mutation.py): subprocesses import the mutated copy too
    os.environ['PYTHONPATH'] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

@pytest.fixture(autouse=True, scope='module')
def _environ_per_module():
    """Each test module starts from the environment the session found. vLLM writes os.environ when its engine starts
    (RANK, WORLD_SIZE, MASTER_ADDR/PORT...); a later test's child process inherited them and tried to join a process
    group on a port the engine still held (EADDRINUSE, or a fork that hung). Seen in a full run, 2026-12-02."""
    before = dict(os.environ)
    yield
    os.environ.clear(); os.environ.update(before)
