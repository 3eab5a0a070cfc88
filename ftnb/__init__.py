"""ftnb: Jupyter-native fine-tuning of language models (LoRA, DoRA, aLoRA, QLoRA, full; SFT)."""

__version__ = "0.0.1"

# The top-level names load on first use, so `import ftnb` stays light: no torch, trl or vllm until needed.
_LAZY = {'RunConfig': 'ftnb.config', 'ConfigError': 'ftnb.config', 'DataError': 'ftnb.config', 'FtnbError': 'ftnb.config',
         'load_config': ('ftnb.config', 'load'), 'save_config': ('ftnb.config', 'save'), 'train': 'ftnb.entry',
         'show_sample': 'ftnb.data', 'run_demo': 'ftnb.demo', 'export': 'ftnb.exporting'}
__all__ = ['__version__', *_LAZY]

def __getattr__(name):
    import importlib
    if name not in _LAZY: raise AttributeError(f"module 'ftnb' has no attribute {name!r}")
    mod, attr = _LAZY[name] if isinstance(_LAZY[name], tuple) else (_LAZY[name], name)
    return getattr(importlib.import_module(mod), attr)
