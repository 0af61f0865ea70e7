"""`textclf predict --input` at scale: the file is read, labelled and written in chunks (the
bytes are those the whole-file path writes), errors far down leave nothing behind, and
`--shard I/N` workers' outputs merge into the unsharded output byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import REPO, command_env
from textclf import predict
from textclf.data.chunks import (check_utf8, count_rows, csv_ready, json_lines, open_table,
                                 read_chunks)
from textclf.data.dataset import DataError, read_table
from textclf.data.shards import record_path, shard_rows
from textclf.model.labeller import Labeller

WORDS = "the food was superb dreadful okay room film phone, \"quoted\" naïve 日本 done".split()


def texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, 12))) for _ in range(n)]


def tricky_frame(n: int = 23) -> pd.DataFrame:
    """Columns whose whole-file dtype a chunk alone would infer differently."""
    frame = pd.DataFrame({"id": range(n), "text": texts(n)})
    frame.loc[3, "text"] = "line one\nline two, with a comma"
    frame["score"] = [float(i) / 4 for i in range(n)]
    frame["flag"] = [i % 2 == 0 for i in range(n)]
    return frame


def write_input(frame: pd.DataFrame, path: Path) -> Path:
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        # Nulls in the last row group only: ints and bools a batch alone keeps as such.
        ids = [None if i == len(frame) - 2 else i for i in frame["id"]]
        flags = [None if i == len(frame) - 1 else f for i, f in enumerate(frame["flag"])]
        table = table.set_column(0, "id", pa.array(ids, pa.int64()))
        table = table.set_column(3, "flag", pa.array(flags, pa.bool_()))
        pq.write_table(table, path, row_group_size=5)
    else:
        records = frame.to_dict(orient="records")
        records[-1].pop("score")                        # a gap: float64 in the whole file
        records[-2]["id"] = "id-21"                     # ints and a string: object
        records[5]["extra"] = True                      # a column only one record has
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" + ("\n" if i == 7
                                                                           else "")
                                for i, r in enumerate(records)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def labeller(tiny_model_dir) -> Labeller:
    return Labeller.load(tiny_model_dir, "fp32")


def whole_file_output(labeller: Labeller, source: Path, out: Path, chunk_size: int) -> bytes:
    """What the code before chunking wrote (read_table, to_csv / to_json of the whole frame),
    with texts labelled in the same chunks (a text's 6th decimal may move with its batch)."""
    rows = read_table(source, ["text"])
    result = pd.concat([predict.label_texts(labeller, rows["text"].iloc[i:i + chunk_size]
                                            .tolist()) for i in range(0, len(rows), chunk_size)],
                       ignore_index=True)
    labelled = pd.concat([rows, result], axis=1)
    if out.suffix == ".csv":
        csv_ready(labelled).to_csv(out, index=False)
    else:
        out.write_text(json_lines(labelled), encoding="utf-8")
    return out.read_bytes()


def label(model: Path, source: Path, out: Path, *extra: str) -> None:
    predict.main(["--model", str(model), "--input", str(source), "--output", str(out),
                  "--precision", "fp32", *extra])


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("out_suffix", [".csv", ".jsonl"])
def test_chunked_output_is_byte_identical_to_the_whole_file_path(
        tiny_model_dir, labeller, tmp_path, suffix, out_suffix, capsys):
    source = write_input(tricky_frame(), tmp_path / f"in{suffix}")
    for chunk_size in (4, 10_000):          # many chunks; one chunk (the code before chunks)
        out = tmp_path / f"out-{chunk_size}{out_suffix}"
        label(tiny_model_dir, source, out, "--chunk-size", str(chunk_size))
        expected = whole_file_output(labeller, source, tmp_path / f"expected{out_suffix}",
                                     chunk_size)
        assert out.read_bytes() == expected, (suffix, out_suffix, chunk_size)
    err = capsys.readouterr().err
    assert "predict: 23 rows ->" in err and "text/s" not in err, "no progress bar in a pipe"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [source.name, f"out-4{out_suffix}", f"out-10000{out_suffix}", f"expected{out_suffix}"])


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("out_suffix", [".csv", ".jsonl"])
def test_the_users_values_come_out_exact(tiny_model_dir, tmp_path, suffix, out_suffix):
    """Big IDs with a gap (float64 would make both 1.5123456789012347e+18), floats to the
    last digit, a time with its zone, a list; in chunks and whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [1512345678901234567, None, 1512345678901234569]
    source = tmp_path / f"in{suffix}"
    if suffix == ".jsonl":
        rows = [{"id": ids[0], "text": "love it", "score": 3.141592653589793, "tags": [1, 2]},
                {"text": "hate it", "score": 1234567890.123456, "tags": []},
                {"id": ids[2], "text": "meh", "score": None, "tags": [3]}]
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.table({"id": pa.array(ids, pa.int64()),
                                 "text": ["love it", "hate it", "meh"],
                                 "score": [3.141592653589793, 1234567890.123456, None],
                                 "tags": [[1, 2], [], [3]]}), source, row_group_size=2)
    for chunk_size in ("1", "100"):
        out = tmp_path / f"out-{chunk_size}{out_suffix}"
        label(tiny_model_dir, source, out, "--chunk-size", chunk_size)
        if out_suffix == ".jsonl":
            written = [json.loads(line) for line in out.read_text().splitlines()]
            assert [r.get("id") for r in written] == ids
            assert [r["score"] for r in written] == [3.141592653589793, 1234567890.123456,
                                                     None]
            assert [r["tags"] for r in written] == [[1, 2], [], [3]]
            assert all(len(str(r["probability"]).split(".")[1]) <= 6 for r in written)
        else:
            lines = out.read_text().splitlines()
            assert lines[1].startswith("1512345678901234567,love it,3.141592653589793,"
                                       '"[1, 2]",')
            assert lines[2].startswith(",hate it,1234567890.123456,[],")
            assert lines[3].startswith("1512345678901234569,meh,,[3],")


def test_a_damaged_parquet_row_group_is_one_line(tiny_model_dir, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "big.parquet"
    pq.write_table(pa.table({"text": [f"text number {i} with some words" for i in
                                      range(20_000)]}), source, row_group_size=2_000)
    damaged = bytearray(source.read_bytes())
    middle = len(damaged) // 2
    damaged[middle:middle + 5_000] = bytes(5_000)
    source.write_bytes(bytes(damaged))
    with pytest.raises(SystemExit) as stopped:
        label(tiny_model_dir, source, tmp_path / "out.csv")
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.startswith(f"error: {source}: cannot read as "
                                                      f"Parquet: ") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.parquet"]


def test_chunks_carry_row_positions_and_read_table_dtypes(tmp_path):
    for suffix in (".jsonl", ".parquet", ".csv"):
        source = write_input(tricky_frame(), tmp_path / f"in{suffix}")
        table = open_table(source, ["text"])
        whole = read_table(source, ["text"])
        chunks = list(read_chunks(table, 4))
        assert [c.index[0] for c in chunks] == list(range(0, 23, 4))
        pd.testing.assert_frame_equal(pd.concat(chunks), whole)
        assert count_rows(table) == 23
        shard = list(read_chunks(table, 4, range(8, 20)))
        assert [c.index[0] for c in shard] == [8, 12, 16] and len(pd.concat(shard)) == 12


def test_an_error_far_down_leaves_no_output_and_no_scratch(tiny_model_dir, tmp_path, capsys):
    frame = pd.DataFrame({"text": texts(40), "id": range(40)})
    frame.loc[33, "text"] = "   "
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "out.csv"
    with pytest.raises(SystemExit) as stopped:
        label(tiny_model_dir, source, out, "--chunk-size", "5")
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert (f"error: {source}: column 'text', row 34: empty, whitespace-only or "
            f"invisible-only text") in err
    # A field too many on a row far down: a parse error once the reader gets there.
    source.write_text("text\n" + "".join(f"text {i}\n" for i in range(30)) + "a,b\n")
    with pytest.raises(SystemExit):
        label(tiny_model_dir, source, out, "--chunk-size", "5")
    assert f"error: {source}: cannot parse as CSV" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"], "no output, no scratch"


@pytest.mark.parametrize("name, content", [
    ("empty.csv", ""),
    ("header.csv", "text,id\n"),
    ("columns.csv", "review,id\nfine,1\n"),
    ("columns.jsonl", '{"review": "fine"}\n'),
    ("blank.jsonl", "\n\n"),
    ("bad.jsonl", '{"text": "fine"}\n[1]\n'),
    ("bad-json.jsonl", '{"text": "fine"}\n{"text": \n'),
    ("latin1.csv", "text\ncaf\xe9\n"),
])
def test_file_errors_are_read_tables_own(tiny_model_dir, tmp_path, capsys, name, content):
    source = tmp_path / name
    source.write_bytes(content.encode("latin-1"))
    with pytest.raises(DataError) as expected:
        read_table(source, ["text"])
    with pytest.raises(SystemExit):
        label(tiny_model_dir, source, tmp_path / "out.csv")
    assert capsys.readouterr().err == f"error: {expected.value}\n"
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("text", ["", " \t\n", "\u200b", "\u0000", "\ufeff", "\u2060",
                                  "\u200b \u00a0\u2060\u0007", "\ufe0f"])
def test_a_text_with_nothing_visible_is_refused_like_an_empty_one(text):
    with pytest.raises(DataError, match=r"^text 2: empty, whitespace-only or invisible-only "
                                        r"text \(found '"):
        predict.check_texts(["fine", text], lambda i: f"text {i + 1}")
    predict.check_texts(["fine", f"a{text}b", "\u200bé"], lambda i: f"text {i + 1}")


def test_invisible_texts_are_refused_on_the_command_line_and_in_files(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:       # before any model is loaded
        predict.main(["--model", str(tmp_path / "no-model"), "fine", "\u200b\u2060"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith(
        "error: text argument 2: empty, whitespace-only or invisible-only text")
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n"
                              for t in ["fine", "also fine", "\u0000\ufeff", "\u200b"]))
    with pytest.raises(SystemExit) as stopped:
        label(tmp_path / "no-model", source, tmp_path / "out.csv")
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith(
        f"error: {source}: column 'text', row 3: empty, whitespace-only or invisible-only text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_utf8_is_checked_in_blocks_with_read_tables_line_and_offset(tmp_path):
    from textclf.data import chunks

    line = "é" * 100 + "\n"                  # two-byte characters: some straddle a block end
    for bad_at in (3, 20_000):
        data = (line * bad_at).encode() + b"caf\xe9\n" + (line * 50).encode()
        source = tmp_path / "in.csv"
        source.write_bytes(b"\xef\xbb\xbftext\n" + data)
        with pytest.raises(DataError) as expected:
            read_table(source, ["text"])
        with pytest.raises(DataError) as found:
            check_utf8(source)
        assert str(found.value) == str(expected.value)
    assert chunks.BLOCK < 20_000 * len(line.encode()), "the bad byte lies past a block"
    good = tmp_path / "good.csv"
    good.write_bytes(("text\n" + line * 20_000).encode())
    import hashlib
    assert check_utf8(good) == hashlib.sha256(good.read_bytes()).hexdigest()


@pytest.mark.parametrize("flag, value, expected", [
    ("--chunk-size", "0", "argument --chunk-size: expected a whole number between 1 and "
                          "10000000, found '0'"),
    ("--chunk-size", "abc", "argument --chunk-size: expected a whole number between 1 and "
                            "10000000, found 'abc'"),
    ("--chunk-size", "1e3", "found '1e3'"),
    ("--batch-size", "100001", "argument --batch-size: expected a whole number between 1 and "
                               "100000, found '100001'"),
    ("--shard", "3/2", "argument --shard: expected I/N, shard I of N counted from 0"),
    ("--shard", "2/2", "found '2/2'"),
    ("--shard", "abc", "found 'abc'"),
    ("--shard", "-1/2", "found '-1/2'"),
    ("--shard", "0/0", "found '0/0'"),
    ("--shard", "1/1000000000000000000000", "0 <= I < N <= 1,000,000"),
])
def test_bad_flags_are_one_clear_line(tmp_path, capsys, flag, value, expected):
    source = tmp_path / "in.csv"
    source.write_text("text\nfine\n")
    with pytest.raises(SystemExit) as stopped:
        predict.main(["--input", str(source), "--output", str(tmp_path / "o.csv"),
                      f"{flag}={value}"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert stopped.value.code == 2 and "Traceback" not in err
    assert len(errors) == 1 and expected in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


@pytest.mark.parametrize("argv, expected", [
    (["fine", "--output", "o.csv"], "--output applies to --input FILE"),
    (["fine", "--text-column", "review"], "--text-column applies to --input FILE"),
    (["fine", "--chunk-size", "10"], "--chunk-size applies to --input FILE"),
])
def test_file_flags_with_texts_as_arguments_are_usage_errors(tmp_path, monkeypatch, capsys,
                                                             argv, expected):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        predict.main(argv)
    assert stopped.value.code == 2 and expected in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_input_that_already_has_the_added_columns_is_refused(tiny_model_dir, tmp_path,
                                                                 capsys):
    source = tmp_path / "in.csv"
    source.write_text("text,predicted_label,probability\nhello,old,0.1\n")
    with pytest.raises(SystemExit):
        label(tiny_model_dir, source, tmp_path / "out.jsonl")
    err = capsys.readouterr().err
    assert "already has a column 'predicted_label' (an earlier output?)" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_shards_are_contiguous_runs_of_whole_chunks():
    for rows in (1, 5, 23, 100, 1001):
        for chunk in (1, 4, 10, 10_000):
            for shards in (1, 2, 3, 7):
                parts = [shard_rows(rows, chunk, i, shards) for i in range(shards)]
                assert [r.start for r in parts] == [0] + [r.stop for r in parts[:-1]]
                assert parts[-1].stop == rows
                assert all(r.start % chunk == 0 for r in parts if len(r))


# --- shards with processes, and merge ---

def textclf(*args: str) -> subprocess.Popen:
    """The `textclf` script as users run it (the one installed beside this Python)."""
    script = Path(sys.executable).with_name("textclf")
    return subprocess.Popen([str(script), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=command_env(OMP_NUM_THREADS="1"), cwd=REPO)


def finish(process: subprocess.Popen) -> str:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return err


@pytest.mark.slow
def test_three_shard_processes_merge_to_the_unsharded_output(tiny_model_dir, tmp_path):
    source = write_input(tricky_frame(50), tmp_path / "in.csv")
    common = ["predict", "--model", tiny_model_dir, "--input", source, "--precision", "fp32",
              "--chunk-size", "7"]
    workers = [textclf(*common, "--output", tmp_path / f"part-{i}.csv", "--shard", f"{i}/3")
               for i in range(3)]
    whole = textclf(*common, "--output", tmp_path / "whole.csv")
    for process in workers + [whole]:
        finish(process)
    records = [json.loads(record_path(tmp_path / f"part-{i}.csv").read_text())
               for i in range(3)]
    assert [(r["start"], r["stop"]) for r in records] == [(0, 14), (14, 35), (35, 50)]
    parts = [tmp_path / f"part-{i}.csv" for i in (2, 0, 1)]     # any order: a glob's
    err = finish(textclf("predict", "--merge", *parts, "--output", tmp_path / "merged.csv"))
    assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert "3 shards, 50 rows of in.csv" in err


@pytest.fixture(scope="module")
def shards(tiny_model_dir, tmp_path_factory) -> Path:
    """Shards 0-2 of 3 of one input (in.jsonl), and shard 1 of another (other-1.jsonl)."""
    folder = tmp_path_factory.mktemp("shards")
    source = write_input(tricky_frame(20), folder / "in.jsonl")
    other = write_input(tricky_frame(21), folder / "other.jsonl")
    for i in range(3):
        label(tiny_model_dir, source, folder / f"part-{i}.jsonl", "--chunk-size", "3",
              "--shard", f"{i}/3")
    label(tiny_model_dir, other, folder / "other-1.jsonl", "--chunk-size", "3",
          "--shard", "1/3")
    label(tiny_model_dir, source, folder / "whole.jsonl", "--chunk-size", "3")
    return folder


def test_merge_in_process_equals_the_unsharded_output(shards, tmp_path):
    predict.main(["--merge", *[str(shards / f"part-{i}.jsonl") for i in range(3)],
                  "--output", str(tmp_path / "merged.jsonl")])
    assert (tmp_path / "merged.jsonl").read_bytes() == (shards / "whole.jsonl").read_bytes()


def test_more_shards_than_chunks_leaves_some_empty_and_still_merges(tiny_model_dir, tmp_path,
                                                                    capsys):
    source = write_input(tricky_frame(5), tmp_path / "in.csv")
    for i in range(3):
        label(tiny_model_dir, source, tmp_path / f"p{i}.csv", "--shard", f"{i}/3")
    assert "shard 0/3 (no rows: more shards than chunks)" in capsys.readouterr().err
    label(tiny_model_dir, source, tmp_path / "whole.csv")
    assert len(pd.read_csv(tmp_path / "p0.csv")) == 0
    predict.main(["--merge", *[str(tmp_path / f"p{i}.csv") for i in range(3)],
                  "--output", str(tmp_path / "merged.csv")])
    assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()


@pytest.mark.parametrize("case, expected", [
    ("missing", "in.jsonl: shard 2/3 (rows 12-19) is missing; expected all 3 shard outputs, "
                "found shards 0, 1"),
    ("duplicate", "part-1.jsonl: shard 1/3 again (also {shards}/part-1.jsonl); expected each "
                  "shard once"),
    ("foreign", "other-1.jsonl: not a shard of the same run as {shards}/part-0.jsonl: its "
                "input_rows is 21, expected 20"),
    ("no record", "whole.jsonl: no shard record whole.jsonl.shard.json beside it; expected "
                  "an output of `textclf predict --shard I/N`"),
    ("edited", "part-1.jsonl: changed since `textclf predict --shard 1/3` wrote it"),
    ("not there", "part-9.jsonl: file not found"),
    ("other type", "part-0.jsonl: a .jsonl shard; expected .csv shards to merge into --output"),
    ("onto a shard", "--output {shards}/part-0.jsonl: is one of the shards to merge"),
    ("onto a copy of the input", "copy.jsonl: is the input the shards were labelled from"),
])
def test_bad_merges_are_one_line_and_write_nothing(shards, tmp_path, capsys, case, expected):
    parts = [shards / f"part-{i}.jsonl" for i in range(3)]
    output = tmp_path / "merged.jsonl"
    if case == "missing":
        parts = parts[:2]
    elif case == "duplicate":
        parts = parts + [parts[1]]
    elif case == "foreign":
        parts[1] = shards / "other-1.jsonl"
    elif case == "no record":
        parts[1] = shards / "whole.jsonl"
    elif case == "edited":
        edited = tmp_path / "part-1.jsonl"
        edited.write_bytes(parts[1].read_bytes().replace(b'"id":', b'"Id":', 1))
        record_path(edited).write_bytes(record_path(parts[1]).read_bytes())
        parts[1] = edited
    elif case == "not there":
        parts[1] = shards / "part-9.jsonl"
    elif case == "other type":
        output = tmp_path / "merged.csv"
    elif case == "onto a copy of the input":
        output = tmp_path / "copy.jsonl"
        output.write_bytes((shards / "in.jsonl").read_bytes())
    else:
        output = parts[0]
    before = {p: p.read_bytes() for p in shards.iterdir()}
    with pytest.raises(SystemExit) as stopped:
        predict.main(["--merge", *map(str, parts), "--output", str(output)])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: ") and expected.format(shards=shards) in err
    assert {p: p.read_bytes() for p in shards.iterdir()} == before, "the shards are untouched"
    assert not any(p.name.startswith(("merged", ".merged")) for p in tmp_path.iterdir())
    if case == "onto a copy of the input":
        assert output.read_bytes() == (shards / "in.jsonl").read_bytes()


def test_merge_usage_errors(shards, capsys):
    for args, expected in ((["--merge", str(shards / "part-0.jsonl")], "--merge needs --output"),
                           (["--merge", "a.csv", "--input", "b.csv", "--output", "c.csv"],
                            "give no texts, --input or --shard")):
        with pytest.raises(SystemExit) as stopped:
            predict.main(args)
        assert stopped.value.code == 2 and expected in capsys.readouterr().err


def test_a_terminal_gets_a_progress_bar(tiny_model_dir, tmp_path):
    """stderr on a terminal (a pseudo-terminal here): a tqdm bar counting texts (a CSV's
    row count is not known before it is read, so no total); the pipe case above gets
    none."""
    import fcntl
    import pty
    import struct
    import subprocess
    import sys
    import termios

    source = write_input(tricky_frame(), tmp_path / "in.csv")
    main, secondary = pty.openpty()
    # A terminal of 80 columns (a new pseudo-terminal has 0, where tqdm draws nothing).
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    textclf = str(Path(sys.executable).with_name("textclf"))
    proc = subprocess.Popen([textclf, "predict", "--model", str(tiny_model_dir), "--input",
                             str(source), "--output", str(tmp_path / "out.csv"),
                             "--precision", "fp32", "--chunk-size", "4"],
                            stderr=secondary, stdout=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    os.close(secondary)
    seen = b""
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:           # EIO: the process closed the terminal
            break
        if not data:
            break
        seen += data
    os.close(main)
    assert proc.wait(timeout=120) == 0, seen.decode(errors="replace")
    assert b"23text [" in seen and b"text/s]" in seen, seen.decode(errors="replace")
