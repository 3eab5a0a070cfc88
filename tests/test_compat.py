"""The compatibility matrix (ftnb.compat): docs/compat.md is what the config checks say now, and the matrix agrees with them.

`python tests/test_compat.py` rewrites docs/compat.md from `ftnb.compat.markdown()`; the test below fails while the
committed page differs, as tests/test_errors.py does for docs/errors.md."""
import sys
from pathlib import Path

from ftnb import compat
from ftnb.config import ConfigError, RunConfig

DOC = Path(__file__).resolve().parent.parent/'docs'/'compat.md'


def test_doc_is_current():
    assert DOC.read_text() == compat.markdown(), 'docs/compat.md is stale: run python tests/test_compat.py'


def test_each_choice_alone_passes_and_changes_the_config():
    "Each choice is valid on its own and differs from the default: a choice the checks refuse alone would make every pair look refused."
    for name, d in compat.CHOICES.items():
        cfg = RunConfig.model_validate(d)
        assert compat.refusal(d) is None, name
        assert any(getattr(getattr(cfg, p), k) != getattr(getattr(RunConfig(), p), k) for p, kv in d.items() for k in kv) or name == 'fused AdamW', name


def test_matrix_is_the_config_checks():
    "Every refused pair raises the same ConfigError when the config is built directly; every allowed one builds."
    m = compat.matrix()
    refused = {k for k, v in m.items() if isinstance(v, ConfigError)}
    assert {('FP8', 'QAT'), ('FP8', 'QLoRA (4-bit)'), ('QAT', 'GPTQ-LoRA')} <= refused
    for (a, b), r in m.items():
        d = compat.merged(compat.CHOICES[a], compat.CHOICES[b])
        if r == compat.SAME: assert d is None; continue
        try: RunConfig.model_validate(d); got = None
        except ConfigError as e: got = str(e)
        assert got == (None if r is None else str(r)), (a, b)


def test_refused_values_are_greyed_by_the_change_not_the_base():
    "refused(cfg) names the values of accel fields that a valid config refuses: FP8, QAT and FSDP2 on QLoRA; fused LoRA under the default adapter dropout."
    r = compat.refused(RunConfig.model_validate({'adapter': {'method': 'qlora'}}), machine=False)
    assert set(r) == {'accel.fp8', 'accel.qat', 'accel.fsdp', 'accel.fused_lora'} and set(r['accel.fp8']) == {True}
    assert r['accel.fused_lora'][True].field == 'adapter.dropout'  # the default 0.05: fused_lora needs 0
    r = compat.refused(RunConfig.model_validate({'accel': {'fp8': True}}), machine=False)
    assert set(r) == {'accel.qat', 'accel.fsdp', 'accel.fused_lora'} and 'both rewrite the linear layers' in r['accel.qat'][True].problem
    r = compat.refused(RunConfig.model_validate({'adapter': {'dropout': 0.0}}), machine=False)
    assert 'accel.fused_lora' not in r  # with dropout 0 it is allowed


if __name__ == '__main__':
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(compat.markdown())
    print(f'wrote {DOC}')
