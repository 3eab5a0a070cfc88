"""Every message the data module can give, word for word, and the small helpers behind them.

Written against the survivors of a mutation run (issue 14): tests/test_data.py checks what the data pipeline builds
(masks by decoding, packing, splitting); these pin the whole text of each error about a file, a sample or a setting,
and the edges of the helpers (piece boundaries, role order, the sample view)."""
import json
import pytest
import datasets
from ftnb import data as D
from ftnb.config import ConfigError, DataCfg, DataError

def msg(fn, err=DataError) -> str:
    with pytest.raises(err) as e: fn()
    return str(e.value)

FILES = {  # name -> (bytes, the message after "<name>: ")
    'arr.jsonl': (b'[{"a": 1}, {"a": 2}]\n', "this is one JSON array of 2 items, not JSON lines (one object per line). Fix: rename it to arr.json: ftnb reads a JSON array from a .json file"),
    'bad.jsonl': (b'{"a": 1}\n\n{"a": \n', "line 3 is not valid JSON (column 7: Expecting value): '{\"a\":'. Fix: fix or delete line 3"),
    'list.jsonl': (b'{"a": 1}\n[1, 2]\n', 'line 2 is a JSON list, not an object. Fix: write one {"field": value, ...} object per line'),
    'mixed.jsonl': (b'{"a": 1}\n{"a": "x"}\n', "a field holds different types in different rows (Could not convert 'x' with type str: tried to convert to int64). Fix: give each field one type in every row, e.g. always a string"),
    'extra.json': (b'{"a": 1}\n{"a": 2}\n', "not valid JSON at line 2, column 1: Extra data. Fix: it holds one object per line: rename it to .jsonl"),
    'bad.json': (b'{"a": [1,\n 2,, 3]}', "not valid JSON at line 2, column 4: Expecting value. Fix: fix the JSON at line 2"),
    'scalar.json': (b'5', 'the JSON is a int that is not a list of objects. Fix: write [{"field": value, ...}, ...] or {"field": [values], ...}'),
    'uneven.json': (b'{"a": [1, 2], "b": ["x"]}', 'the JSON is a dict that is not a list of objects. Fix: write [{"field": value, ...}, ...] or {"field": [values], ...}'),
    'mixedlist.json': (b'[{"a": 1}, 2]', 'the JSON is a list that is not a list of objects. Fix: write [{"field": value, ...}, ...] or {"field": [values], ...}'),
    'bad.csv': (b'a,b\n1,2\n3,4,5\n', "cannot parse it as csv: Error tokenizing data. C error: Expected 2 fields in line 3, saw 3. Fix: check that the file is valid csv"),
    'bad.parquet': (b'nope', "cannot parse it as parquet: Could not open Parquet input source 'bad.parquet': Parquet file size is 4 bytes, smaller than the minimum file footer (8 bytes). Fix: check that the file is valid parquet"),
    'latin.jsonl': ('{"a": "caf\xe9"}\n'.encode('latin-1'), "not UTF-8 text (byte 10). Fix: save the file as UTF-8"),
    'x.txt': (b'x', "unknown file extension '.txt'. Fix: use one of .jsonl, .json, .csv, .parquet (convert the file, or rename it if it already is one of those)"),
}

@pytest.mark.parametrize('name', list(FILES))
def test_file_messages(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    raw, want = FILES[name]
    (tmp_path/name).write_bytes(raw)
    assert msg(lambda: D.load_rows(DataCfg(path=name))) == f'{name}: {want}'

def test_missing_files_say_where_they_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert msg(lambda: D.load_rows(DataCfg(path='missing.jsonl'))) == f"missing.jsonl: file not found (looked in {tmp_path}). Fix: check the path; relative paths start from the current folder {tmp_path}"
    assert msg(lambda: D.check_source('./nofile')) == f"./nofile: no such file or folder (looked in {tmp_path}). Fix: check the path; relative paths start from the current folder {tmp_path}"
    (tmp_path/'noext').write_text('x')
    assert msg(lambda: D.check_source('./noext')) == "./noext: unknown file extension '(none)'. Fix: use one of .jsonl, .json, .csv, .parquet (convert the file, or rename it if it already is one of those)"
    (tmp_path/'d.jsonl').mkdir()
    assert D._source_kind('d.jsonl') == 'hub' and D.check_source('d.jsonl') is None  # a folder, whatever its name: datasets reads it
    assert D.check_source('hub/id') is None and D.check_source('toy:text') is None
    assert msg(lambda: D.check_source('toy:nope')) == "toy:nope: unknown toy dataset 'nope'. Fix: use one of: toy:text, toy:prompt_completion, toy:chat, toy:response, toy:addition, toy:addition_test"

def test_readers_that_succeed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = {'cols.json': '{"a": [1, 2], "b": ["x", "y"]}', 'wrapped.json': '{"data": [{"a": 1}, {"a": 2}]}',
             'rows.json': '[{"a": 1}, {"b": "x"}]', 'bom.jsonl': '\ufeff{"a": 1}\r\n\n{"a": 2}\n', 'c.csv': 'a,b\n1,\n3,NA\n'}
    for n, t in files.items(): (tmp_path/n).write_text(t, encoding='utf-8')
    rows = lambda n: D.load_rows(DataCfg(path=n)).to_dict()
    assert rows('cols.json') == {'a': [1, 2], 'b': ['x', 'y']} and rows('wrapped.json') == {'a': [1, 2]}
    assert rows('rows.json') == {'a': [1, None], 'b': [None, 'x']}  # a field missing from a row is None there
    assert rows('bom.jsonl') == {'a': [1, 2]}
    assert rows('c.csv') == {'a': ['1', '3'], 'b': ['', 'NA']}  # every cell a string; pandas' NA guessing off
    datasets.Dataset.from_dict({'a': [1, 2]}).to_parquet(str(tmp_path/'p.parquet'))
    assert rows('p.parquet') == {'a': [1, 2]}
    assert msg(lambda: D.load_rows(DataCfg(path=str(tmp_path/'empty.csv')))).endswith('file not found (looked in ' + str(tmp_path) + '). Fix: check the path; relative paths start from the current folder ' + str(tmp_path))
    (tmp_path/'empty.csv').write_text('')
    assert msg(lambda: D.load_rows(DataCfg(path='empty.csv'))) == 'empty.csv: the dataset is empty (0 rows). Fix: point the path at a file that holds samples'

def test_hub_messages(monkeypatch):
    def fail(src, split): raise ConnectionError("Couldn't reach it")
    monkeypatch.setattr(datasets, 'load_dataset', fail)
    assert msg(lambda: D._load_hub('org/set', 'test')) == ("org/set: cannot load it as a hub dataset (split 'test'): ConnectionError: Couldn't reach it. "
        "Fix: check the id and split and that you are online (HF_HUB_OFFLINE unset), or set path to a local .jsonl/.json/.csv/.parquet file")
    monkeypatch.setattr(datasets, 'load_dataset', lambda src, split: datasets.DatasetDict({'train': datasets.Dataset.from_dict({'a': [1]})}))
    assert msg(lambda: D._load_hub('org/set', None)) == "org/set: split None did not give one table but a DatasetDict. Fix: set DataCfg.split, e.g. 'train'"
    got = {}
    def ok(src, split): got.update(src=src, split=split); return datasets.Dataset.from_dict({'a': [1]})
    monkeypatch.setattr(datasets, 'load_dataset', ok)
    assert D._load_hub('org/set', 'train').to_dict() == {'a': [1]} and got == {'src': 'org/set', 'split': 'train'}

def test_sample_messages():
    assert msg(lambda: D._check_str(5, 'text', 3, 's')) == "s: sample 3: field 'text' is int '5', not a string. Fix: fix or remove that sample"
    assert msg(lambda: D._check_str(['a' * 70], 'p', 0, 's')) == "s: sample 0: field 'p' is list \"['" + 'a' * 58 + "\", not a string. Fix: fix or remove that sample"
    assert D._check_str('ok', 'text', 0, 's') == 'ok'
    shape = "is not a list of {'role': ..., 'content': ...} messages"
    assert msg(lambda: D._check_msgs('[not json', 'm', 1, 's')) == f"s: sample 1: field 'm' {shape}: '[not json'. Fix: fix or remove that sample"
    assert msg(lambda: D._check_msgs([{'content': 'x'}], 'm', 1, 's')) == f"s: sample 1: field 'm' {shape}: \"[{{'content': 'x'}}]\". Fix: fix or remove that sample"
    assert msg(lambda: D._check_msgs([], 'm', 2, 's')) == f"s: sample 2: field 'm' {shape}: '[]'. Fix: fix or remove that sample"
    assert D._check_msgs(' [{"role": "user", "content": "hi"}]', 'm', 1, 's') == [{'role': 'user', 'content': 'hi'}]  # JSON text
    assert D._check_msgs([{'role': 'user', 'content': 'x', 'tool_calls': None}], 'm', 1, 's') == [{'role': 'user', 'content': 'x'}]
    order = 'Fix: fix that sample so turns go user, assistant, user, ... (a system message may come first), or remove it'
    assert msg(lambda: D._check_roles([{'role': 'system'}, {'role': 'assistant'}], 2, 's')) == \
        f"s: sample 2: the roles are out of order (system -> assistant): it starts with an assistant turn (no user turn before it). {order}"
    assert msg(lambda: D._check_roles([{'role': 'user'}, {'role': 'assistant'}, {'role': 'assistant'}], 2, 's')) == \
        f"s: sample 2: the roles are out of order (user -> assistant -> assistant): two assistant turns follow each other. {order}"
    assert D._check_roles([{'role': 'system'}, {'role': 'assistant'}], 2, 's', whole=False) is None  # a completion alone may start with it
    assert D._check_roles([{'role': 'developer'}, {'role': 'user'}, {'role': 'assistant'}], 2, 's') is None
    assert msg(lambda: D._check_reply('  ', 4, 's')) == "s: sample 4: the completion is empty '  ', so it would train only on the end-of-text token. Fix: write the completion, or remove that sample"
    assert msg(lambda: D._checked_chat([{'role': 'user', 'content': 'q'}, {'role': 'assistant', 'content': ' '}], 5, 's')) == \
        "s: sample 5: the assistant reply is empty ' ', so it would train only on the end-of-text token. Fix: write the assistant reply, or remove that sample"
    tool = [{'role': 'user', 'content': 'q'}, {'role': 'assistant', 'content': '', 'tool_calls': [{'x': 1}]}]
    assert D._checked_chat(tool, 5, 's') == tool  # a tool call may come with no text

def test_tokenizer_and_template_messages(tmp_path):
    class NoEos: eos_token_id = None
    assert msg(lambda: D._eos_id(NoEos()), ConfigError) == ("tokenizer.eos_token=None: the tokenizer has no eos token, so samples cannot end. "
                                                            "Fix: set tok.eos_token (e.g. to the model's end-of-text token)")
    class Eos: eos_token_id = 0
    assert D._eos_id(Eos()) == 0  # id 0 is an eos like any other
    assert msg(lambda: D._template_text(str(tmp_path/'no.jinja')), ConfigError) == (f"data.chat_template={str(tmp_path/'no.jinja')!r}: there is no file "
        f"{str(tmp_path/'no.jinja')!r}. Fix: give the path of an existing Jinja file, or the template text itself (with its {{% ... %}} and {{{{ ... }}}} tags)")
    (tmp_path/'t.jinja').write_text('{{ messages }}')
    assert D._template_text(str(tmp_path/'t.jinja')) == '{{ messages }}' and D._template_text('{% if x %}{% endif %}') == '{% if x %}{% endif %}'

def test_split_sample_edges():
    assert D.split_sample(list(range(10)), list(range(10)), 4, 1) == [([0, 1, 2, 3], [0, 1, 2, 3]), ([3, 4, 5, 6], [-100, 4, 5, 6]), ([6, 7, 8, 9], [-100, 7, 8, 9])]
    assert D.split_sample(list(range(8)), list(range(8)), 4) == [([0, 1, 2, 3], [0, 1, 2, 3]), ([4, 5, 6, 7], [4, 5, 6, 7])]  # exactly two pieces
    assert D.split_sample([1, 2], [1, 2], 4, 3) == [([1, 2], [1, 2])]
    assert D.split_sample(list(range(5)), list(range(5)), 4, 2) == [([0, 1, 2, 3], [0, 1, 2, 3]), ([2, 3, 4], [-100, -100, 4])]
    for bad in (4, 5, -1):
        assert msg(lambda: D.split_sample([1], [1], 4, bad), ConfigError) == f"data.overlap={bad}: each piece must bring new tokens. Fix: make it smaller than data.max_length (4)"
    assert D._prefix_len([1, 2, 3], [1, 2, 4]) == 2 and D._prefix_len([1, 2], [1, 2, 3]) == 2 and D._prefix_len([], [1]) == 0 and D._prefix_len([5], [5]) == 1

def test_sft_kwargs():
    base = {'packing_strategy': 'bfd', 'completion_only_loss': False, 'assistant_only_loss': False}
    assert D.sft_kwargs(DataCfg(max_length=77)) == {**base, 'max_length': 77, 'packing': False, 'padding_free': False}
    assert D.sft_kwargs(DataCfg(max_length=77, padding_free=True)) == {**base, 'max_length': None, 'packing': False, 'padding_free': True}
    assert D.sft_kwargs(DataCfg(max_length=77, padding_free=True, packing=True)) == {**base, 'max_length': 77, 'packing': True, 'padding_free': True}
    assert D.sft_kwargs(DataCfg(max_length=77, packing=True)) == {**base, 'max_length': 77, 'packing': True, 'padding_free': False}

def test_sample_view_text_and_html():
    v = D.SampleView(['a', '\n', 'b\t', 'c<'], [False, True, True, False], [True, False, False, False], [1, 2, 3, 4])
    assert (v.n_trained, v.n_masked) == (2, 2)
    assert repr(v) == '2 trained / 2 masked\na⟦\nb\t⟧c<'
    assert v._repr_html_() == ('<div style="font-family:monospace;font-size:13px"><div style="margin-bottom:4px">'
        '<span style="background:#b9f3b0;color:#111">&nbsp;trained&nbsp;</span> <span style="background:#ececec;color:#888">&nbsp;masked (-100)&nbsp;</span> '
        '<span style="background:#ececec;color:#888;outline:1px dashed #555;font-weight:bold">special</span> &nbsp;<b>2 trained / 2 masked</b></div>'
        '<div style="white-space:pre-wrap;line-height:1.8">'
        '<span title="#0 id 1 · masked" style="background:#ececec;color:#888;outline:1px dashed #555;font-weight:bold">a</span>'
        '<span title="#1 id 2 · trained" style="background:#9fe08f;color:#111">↵\n</span>'
        '<span title="#2 id 3 · trained" style="background:#b9f3b0;color:#111">b→\t</span>'
        '<span title="#3 id 4 · masked" style="background:#dadada;color:#777">c&lt;</span></div></div>')
    assert repr(D.SampleView(['a', 'b'], [True, True], [False, False], [1, 2])) == '2 trained / 0 masked\n⟦ab⟧'
    assert repr(D.SampleView(['a', 'b'], [False, True], [False, False], [1, 2])) == '1 trained / 1 masked\na⟦b⟧'

def test_chat_template_messages():
    from ftnb.testing import tiny_tokenizer
    msgs = [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'yo'}]
    tok = tiny_tokenizer(); tok.chat_template = None
    assert msg(lambda: D._encode_chat(tok, msgs, 'chat.jsonl')) == ("chat.jsonl: the tokenizer has no chat template, so chat messages cannot be rendered. "
        "Fix: use a chat model's tokenizer, set tok.chat_template, or give the samples as text")
    tok.chat_template = '{% for m in messages %}{{ m.content }}|{% endfor %}{{ messages | length }}'  # the count at the end changes every prefix
    assert msg(lambda: D._encode_chat(tok, msgs, 'chat.jsonl')) == ("chat.jsonl: the chat template renders a conversation prefix differently from the "
        "full conversation, so assistant turns cannot be located. Fix: use a template with {% generation %} tags, or set completion_only=False to train on every token")
    # the template's switches reach every rendering: the spans are found with them, and the text is rendered with them
    tok.chat_template = "{% for m in messages %}{% if m.role == 'assistant' and think %}<t>{% endif %}{{ m.content }}\n{% endfor %}"
    ids, tr = D._encode_chat(tok, msgs, 's', think=True)
    assert tok.decode(ids) == tok.apply_chat_template(msgs, tokenize=False, think=True) and '<t>' in tok.decode(ids)
    assert '<t>' in tok.decode([i for i, t in zip(ids, tr) if t]) and 'hi' not in tok.decode([i for i, t in zip(ids, tr) if t])

def test_prepare_splits_and_eval_files(tmp_path):
    from ftnb.testing import tiny_tokenizer
    tok = tiny_tokenizer()
    train, ev = D.prepare(DataCfg(path='toy:prompt_completion', max_samples=20, eval_fraction=0.25), tok)
    assert (len(train), len(ev)) == (15, 5)
    assert D.prepare(DataCfg(path='toy:prompt_completion', max_samples=20, eval_fraction=0), tok)[1] is None
    assert [len(x) for x in D.prepare(DataCfg(path='toy:prompt_completion', max_samples=2, eval_fraction=0.1), tok)] == [1, 1]  # at least one
    assert D.prepare(DataCfg(path='toy:prompt_completion', max_samples=1, eval_fraction=0.5), tok)[1] is None  # one sample: nothing to hold out
    rows = [{'prompt': f'{i}+1=', 'completion': f' {i + 1}'} for i in range(3)]
    (tmp_path/'ev.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    train, ev = D.prepare(DataCfg(path='toy:prompt_completion', max_samples=8, eval_path=str(tmp_path/'ev.jsonl')), tok)
    assert (len(train), len(ev)) == (8, 3) and tok.decode(ev[0]['input_ids']).startswith('0+1=')
    (tmp_path/'bad.jsonl').write_text(json.dumps({'prompt': 5, 'completion': 'x'}) + '\n')
    assert msg(lambda: D.prepare(DataCfg(path='toy:prompt_completion', max_samples=8, eval_path=str(tmp_path/'bad.jsonl')), tok)).startswith(
        f"{tmp_path/'bad.jsonl'}: sample 0: field 'prompt' is int '5', not a string")  # the eval file is named, not the train set

def test_split_drops_pieces_without_a_trained_token_and_says_how_many():
    from ftnb.testing import tiny_tokenizer
    import warnings
    tok = tiny_tokenizer()
    cfg = DataCfg(path='s', format='text', response_template='###', max_length=8, too_long='split')
    ds = datasets.Dataset.from_dict({'text': ['a b c d e f g h i j k l m n o p q r s t ### u v']})
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        out = D.tokenize(ds, tok, cfg)
    ids = D.tokenize(ds, tok, DataCfg(path='s', format='text', response_template='###', max_length=512))[0]
    pieces = D.split_sample(ids['input_ids'], ids['labels'], 8)
    kept = [p for p in pieces if any(l != -100 for l in p[1])]
    assert len(out) == len(kept) < len(pieces)
    assert [str(x.message) for x in w if issubclass(x.category, D.DataWarning)] == [
        f"s: 1 of 1 samples are longer than max_length=8 tokens (longest: {len(ids['input_ids'])}): split them, and dropped {len(pieces) - len(kept)} pieces that had no trained token"]
