import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

# The test models are tiny: one intra-op thread per process is much faster than two (20.9 vs 0.88 steps/s measured
# for the demo model on the 2-core dev machine with another process busy), and pytest shares the cores with nothing.
import torch
torch.set_num_threads(1)

if 'MUTANT_UNDER_TEST' in os.environ:  # mutation testing (.ci/mutation.py): subprocesses import the mutated copy too
    os.environ['PYTHONPATH'] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
