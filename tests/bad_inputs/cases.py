"""The bad-input corpus: every mistake a researcher can make in an experiment file, its environment or the command
line, as one row of a table. tests/bad_inputs/test_bad_inputs.py runs each row as a real `notes-tui` process and
holds it to the same rule: exit status 2, exactly one line on stderr that names the problem and (after ' — ') the
fix, no traceback, nothing written to the results table, the notes untouched, no run journal.

A row: `Bad(id, fragment, make)`. `make(ctx)` returns the experiment text, usually `ctx.base()` (a valid experiment
over the context's notes: SQLite, or MySQL when `kind="mysql"`, with a live stand-in Ollama server) with one thing
changed. `fragment` is what the error line must contain. `args` is the command line (`{exp}` is the file written
from `make`), `env` extra environment (`{tmp}` filled in too), `files` extra files to write next to it (a name
with folders makes them).

Sections are lists that CASES joins; the Slurm and evaluation issues add theirs where marked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Bad:
    id: str
    fragment: str
    make: Callable[[Any], str] | None = None  # None: no experiment file is written (command-line rows)
    kind: str = "sqlite"  # sqlite | mysql: where the notes are
    args: tuple[str, ...] = ("--run", "{exp}")
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    raw: bytes | None = None  # the experiment file's bytes, when they are not text (overrides make)


def swap(text: str, old: str, new: str) -> str:
    assert old in text, f"{old!r} is not in the base experiment"
    return text.replace(old, new, 1)


def base_swap(old: str, new: str) -> Callable[[Any], str]:
    return lambda c: swap(c.base(), old, new)


def added(lines: str, after: str = "") -> Callable[[Any], str]:
    """The base with `lines` added at the top (after=''), or right after the line `after`."""
    if not after:
        return lambda c: lines + "\n" + c.base()
    return lambda c: swap(c.base(), after, after + "\n" + lines)


def in_source(lines: str) -> Callable[[Any], str]:
    """The base with `lines` added to [source]."""
    return added(lines, after='text_column = "note_text"')


def results_table(name: str) -> Callable[[Any], str]:
    return base_swap('table = "pna_results"', f'table = "{name}"')


CHOICES = 'choices = ["(1) Likely", "(2) Unlikely", "(3) Unable to say"]'

# -- the file itself ---------------------------------------------------------------------------------------------
FILE = [
    Bad("broken-toml", "not valid TOML", lambda c: c.base() + "\n[model\n"),
    Bad("empty-file", "name: required key is missing", lambda c: ""),
    Bad("only-comments", "name: required key is missing", lambda c: "# pneumonia, v2\n# TODO\n"),
    Bad("duplicate-key", "not valid TOML", added('name = "again"', after='name = "pna-test"')),
    Bad("not-utf8", "cannot read the file (UnicodeDecodeError)", raw=b'name = "Pneumonie \xd6dem"\n'),
    Bad("binary-garbage", "cannot read the file", raw=bytes(range(256)) * 4),
    Bad("file-missing", "no such experiment file", None, args=("--run", "{tmp}/nope.toml")),
    Bad("file-is-a-directory", "cannot read the file (IsADirectoryError)", None, args=("--run", "{tmp}")),
    Bad("section-is-a-value", "not valid TOML", added('model = "llama3"')),
]

# -- keys: unknown, misspelt, missing, wrong type, out of range --------------------------------------------------
KEYS = [
    Bad("unknown-top-key", "nmae: unknown key in the top level", added('nmae = "x"')),
    Bad("misspelt-section", "evalution: unknown key in the top level", lambda c: c.base() + "\n[evalution]\n"),
    Bad("misspelt-model-key", "model.hots: unknown key in [model]", base_swap("timeout_s = 10", "timeout_s = 10\nhots = 1")),
    Bad("misspelt-option", "model.options.temprature: unknown key in [model.options]",
        base_swap("temperature = 0.0", "temprature = 0.0")),
    Bad("misspelt-prompt-key", "prompt.sytem: unknown key in [prompt]", base_swap("system =", "sytem =")),
    Bad("misspelt-answer-key", "answer.max_attempt: unknown key in [answer]", base_swap("max_attempts = 2", "max_attempt = 2")),
    Bad("misspelt-field-key", "answer.fields.response.choises: unknown key", base_swap("choices = [", "choises = [")),
    Bad("misspelt-source-key", "source.id_column: unknown key in [source]", base_swap("id_columns =", "id_column =")),
    Bad("misspelt-results-key", "results.batchsize: unknown key in [results]", base_swap("batch_size = 10", "batchsize = 10")),
    Bad("misspelt-run-key", "run.grace: unknown key in [run]", base_swap("grace_s = 5", "grace = 5")),
    Bad("unknown-fallback-table", "unknown key", lambda c: c.base() + "\n[answer.fallback2]\n"),
    Bad("missing-name", "name: required key is missing", base_swap('name = "pna-test"', "")),
    Bad("missing-results", "results: required key is missing",
        base_swap('[results]\ntable = "pna_results"\nbatch_size = 10', "")),
    Bad("missing-text-column", "source.text_column: required key is missing", base_swap('text_column = "note_text"', "")),
    Bad("name-not-a-string", "name: Input should be a valid string", base_swap('name = "pna-test"', "name = 5")),
    Bad("name-empty", "name: String should have at least 1 character", base_swap('name = "pna-test"', 'name = ""')),
    Bad("name-too-long", "name: String should have at most 191 characters",
        base_swap('name = "pna-test"', f'name = "{"x" * 192}"')),
    Bad("num-ctx-not-a-number", "model.options.num_ctx", base_swap("num_ctx = 4096", 'num_ctx = "big"')),
    Bad("num-ctx-zero", "model.options.num_ctx: Input should be greater than 0", base_swap("num_ctx = 4096", "num_ctx = 0")),
    Bad("num-ctx-huge", "model.options.num_ctx: Input should be less than or equal to 1048576",
        base_swap("num_ctx = 4096", "num_ctx = 10000000")),
    Bad("temperature-too-high", "model.options.temperature: Input should be less than or equal to 2",
        base_swap("temperature = 0.0", "temperature = 7")),
    Bad("temperature-negative", "model.options.temperature", base_swap("temperature = 0.0", "temperature = -0.1")),
    Bad("top-p-zero", "model.options.top_p: Input should be greater than 0", added("top_p = 0", after="seed = 7")),
    Bad("top-k-zero", "model.options.top_k", added("top_k = 0", after="seed = 7")),
    Bad("num-predict-zero", "model.options.num_predict", added("num_predict = 0", after="seed = 7")),
    Bad("seed-not-an-int", "model.options.seed", base_swap("seed = 7", "seed = 7.5")),
    Bad("timeout-zero", "model.timeout_s: Input should be greater than 0", base_swap("timeout_s = 10", "timeout_s = 0")),
    Bad("keep-alive-a-list", "model.keep_alive", added("keep_alive = [1]", after="timeout_s = 10")),
    Bad("hosts-a-number", "model.hosts", lambda c: swap(c.base(), f'hosts = ["{c.url}"]', "hosts = 5")),
    Bad("max-attempts-zero", "answer.max_attempts: Input should be greater than or equal to 1",
        base_swap("max_attempts = 2", "max_attempts = 0")),
    Bad("max-attempts-huge", "answer.max_attempts", base_swap("max_attempts = 2", "max_attempts = 50")),
    Bad("batch-size-zero", "results.batch_size", base_swap("batch_size = 10", "batch_size = 0")),
    Bad("batch-size-huge", "results.batch_size", base_swap("batch_size = 10", "batch_size = 1000000")),
    Bad("concurrency-zero", "run.concurrency", added("concurrency = 0", after="grace_s = 5")),
    Bad("concurrency-huge", "run.concurrency", added("concurrency = 5000", after="grace_s = 5")),
    Bad("grace-negative", "run.grace_s", base_swap("grace_s = 5", "grace_s = -1")),
    Bad("give-up-zero", "run.give_up_s", added("give_up_s = 0", after="grace_s = 5")),
    Bad("source-limit-zero", "source.limit", in_source("limit = 0")),
    Bad("id-columns-a-string", "source.id_columns: Input should be a valid list",
        lambda c: swap(c.base(), f'id_columns = ["{c.id}"]', f'id_columns = "{c.id}"')),
    Bad("unknown-backend", "model.backend", base_swap('backend = "ollama"', 'backend = "openai"')),
    Bad("unknown-source-kind", "source.kind", lambda c: swap(c.base(), f'kind = "{c.kind}"', 'kind = "postgres"')),
]

# -- the prompt and the answer ---------------------------------------------------------------------------------
PROMPT = [
    Bad("prompt-empty", "prompt.user: String should have at least 1 character",
        base_swap('user = "Does this note suggest pneumonia is a diagnosis? Note: {note}"', 'user = ""')),
    Bad("placeholder-unknown", "placeholder {mrn} is not provided by the source",
        base_swap("Note: {note}", "MRN {mrn} Note: {note}")),
    Bad("no-note-placeholder", "never uses {note}", base_swap("Note: {note}", "Note: here")),
    Bad("placeholder-conversion", "placeholder {note!r} is not a plain {column}", base_swap("Note: {note}", "Note: {note!r}")),
    Bad("placeholder-format-spec", "placeholder {note:>9} is not a plain {column}", base_swap("Note: {note}", "Note: {note:>9}")),
    Bad("placeholder-attribute", "placeholder {note.__class__} is not a plain {column}",
        base_swap("Note: {note}", "Note: {note} {note.__class__}")),
    Bad("placeholder-index", "is not a plain {column}", base_swap("Note: {note}", "Note: {note[0]}")),
    Bad("placeholder-positional", "placeholder {0} is not a plain {column}", base_swap("Note: {note}", "Note: {note} {0}")),
    Bad("placeholder-unclosed", "prompt.user: expected '}' before end of string", base_swap("Note: {note}", "Note: {note")),
    Bad("fields-empty", "answer.fields",
        lambda c: c.base().split("[answer.fields.response]")[0] + "[answer.fallback]\n" + c.base().split("[answer.fallback]")[1]),
    Bad("field-type-unknown", "answer.fields.response.type", base_swap('type = "choice"', 'type = "date"')),
    Bad("choice-without-choices", "a choice field needs choices", base_swap(CHOICES, "")),
    Bad("duplicate-choices", "the same choice is listed twice", base_swap('"(3) Unable to say"]', '"(2) Unlikely"]')),
    Bad("empty-choice", "a choice is empty or longer than 255 characters", base_swap('"(3) Unable to say"]', '"  "]')),
    Bad("choice-too-long", "a choice is empty or longer than 255 characters", base_swap('"(3) Unable to say"]', f'"{"x" * 300}"]')),
    Bad("choices-on-text", "choices only apply to type = \"choice\"",
        base_swap("max_length = 200", 'max_length = 200\nchoices = ["a"]')),
    Bad("max-length-on-choice", "max_length only applies to text fields", added("max_length = 10", after=CHOICES)),
    Bad("text-without-max-length", "a text field needs max_length", base_swap("max_length = 200", "")),
    Bad("field-named-valid", "'valid' is a column notes-tui writes itself",
        base_swap("[answer.fields.explanation]", "[answer.fields.valid]")),
    Bad("field-name-not-ident", "field name is not a plain identifier",
        base_swap("[answer.fields.explanation]", '[answer.fields."the explanation"]')),
    Bad("field-is-an-id-column", "is also an id column",
        lambda c: swap(c.base(), "[answer.fallback]", f'[answer.fields.{c.id}]\ntype = "int"\n[answer.fallback]')),
    Bad("fallback-wrong-field", "fallback for a field that is not in [answer.fields]",
        base_swap('explanation = "LLM output failed validation."', 'reason = "x"')),
    Bad("fallback-wrong-type", "fallback 4 does not fit a choice field",
        base_swap('response = "(4) LLM output invalid"', "response = 4")),
]

# -- the source: identifiers, queries, files -------------------------------------------------------------------
SOURCE = [
    Bad("sql-in-table", "not a plain table name", base_swap('table = "notes"', 'table = "x; DROP TABLE y"')),
    Bad("sql-in-id-column", "not a plain column name",
        lambda c: swap(c.base(), f'id_columns = ["{c.id}"]', 'id_columns = ["id`; --"]')),
    Bad("sql-in-text-column", "source.text_column: 'note_text) FROM x --' is not a plain column name",
        base_swap('text_column = "note_text"', 'text_column = "note_text) FROM x --"')),
    Bad("sql-in-columns", "source.columns: 'a b' is not a plain column name", in_source('columns = ["a b"]')),
    Bad("sql-in-results-table", "results.table", results_table("r; DROP TABLE notes")),
    Bad("sql-in-database", "source.database: 'x;y' is not a plain database name", in_source('database = "x;y"')),
    Bad("results-table-hyphen", "results.table", results_table("results-2024")),
    Bad("results-table-three-parts", "results.table", results_table("a.b.c")),
    Bad("results-is-the-notes-table", "results.table: 'notes' is the notes table", results_table("notes")),
    Bad("results-is-the-notes-table-case", "is the notes table", results_table("NOTES")),
    Bad("results-table-of-other-answers", "exists but has no column", results_table("old_answers")),
    Bad("id-column-named-like-ours", "has the name of a column notes-tui writes",
        lambda c: swap(c.base(), f'id_columns = ["{c.id}"]', 'id_columns = ["experiment"]')),
    Bad("table-and-query", "give exactly one of table or query",
        base_swap('table = "notes"', 'table = "notes"\nquery = "SELECT * FROM notes"')),
    Bad("neither-table-nor-query", "give exactly one of table or query", base_swap('table = "notes"\n', "")),
    Bad("query-not-select", "the query must be one SELECT statement", base_swap('table = "notes"', 'query = "DELETE FROM notes"')),
    Bad("query-two-statements", "the query must be one SELECT statement",
        base_swap('table = "notes"', 'query = "SELECT * FROM notes; DROP TABLE notes"')),
    Bad("query-update-in-with", "the database rejected the notes query",
        base_swap('table = "notes"', 'query = "WITH x AS (SELECT 1) UPDATE notes SET note_text = 1"')),
    Bad("query-into-outfile", "the database rejected the notes query",
        base_swap('table = "notes"', "query = \"SELECT * FROM notes INTO OUTFILE '/tmp/notes-tui-out'\"")),
    Bad("where-with-semicolon", "where must be one SQL condition without ';'", in_source('where = "1=1; DROP TABLE notes"')),
    Bad("where-blank", "where must be one SQL condition", in_source('where = "  "')),
    Bad("where-broken", "the database rejected the notes query", in_source('where = "note_id >>> 3"')),
    Bad("group-by-and-columns", "differs between the notes of a group",
        lambda c: swap(c.base(), f'id_columns = ["{c.id}"]', 'group_by = ["patient"]\ncolumns = ["note_id"]')),
    Bad("order-by-without-group-by", "order_by orders the notes inside a group", in_source('order_by = ["note_id"]')),
    Bad("id-columns-differ-from-group-by", "with group_by, a unit is identified by the group",
        in_source('group_by = ["patient"]')),
    Bad("no-id-columns", "source.id_columns: required key is missing", lambda c: swap(c.base(), f'id_columns = ["{c.id}"]\n', "")),
    Bad("unknown-text-column", "the database rejected the notes query",
        base_swap('text_column = "note_text"', 'text_column = "body"')),
    Bad("unknown-table", "the database rejected the notes query", base_swap('table = "notes"', 'table = "no_such_notes"')),
    Bad("results-in-unknown-schema", "results.table", results_table("other.pna_results")),
]

SQLITE_FILES = [
    Bad("sqlite-path-missing", "no SQLite database", base_swap('path = "notes.db"', 'path = "nowhere/notes.db"')),
    Bad("sqlite-path-is-a-directory", "is not a usable SQLite database", base_swap('path = "notes.db"', 'path = "."')),
    Bad("sqlite-file-not-a-database", "is not a usable SQLite database (file is not a database)",
        base_swap('path = "notes.db"', 'path = "text.db"'), files={"text.db": b"patient notes, not a database\n" * 40}),
    Bad("sqlite-path-missing-for-sqlite", "a sqlite source needs a path", base_swap('path = "notes.db"\n', "")),
    Bad("seed-csv-missing", "no CSV file at", base_swap('path = "notes.db"', 'path = "new.db"\nseed_csv = "nope.csv"')),
    Bad("env-file-for-sqlite", "env_file is for mysql sources",
        base_swap('path = "notes.db"', 'path = "notes.db"\nenv_file = ".env"')),
]

# -- MySQL: credentials and the server -------------------------------------------------------------------------
MYSQL = [
    Bad("mysql-missing-env", "DB_USER is not set", lambda c: c.base(env_file=None), kind="mysql"),
    Bad("mysql-env-file-missing", "source.env_file: no such file", lambda c: c.base(env_file="nope.env"), kind="mysql"),
    Bad("mysql-env-file-is-a-directory", "source.env_file:", lambda c: c.base(env_file="."), kind="mysql"),
    Bad("mysql-no-password-line", "DB_PASS is not set",
        lambda c: c.base(env="DB_USER=root\nDB_HOST=127.0.0.1\nDB_NAME=x\n"), kind="mysql"),
    Bad("mysql-no-host-line", "DB_HOST is not set", lambda c: c.base(env="DB_USER=root\nDB_PASS=\nDB_NAME=x\n"), kind="mysql"),
    Bad("mysql-port-not-a-number", "DB_PORT='mysql' is not a port number", lambda c: c.base(port="mysql"), kind="mysql"),
    Bad("mysql-db-name-sql", "DB_NAME 'x;DROP' is not a plain database name", lambda c: c.base(database="x;DROP"), kind="mysql"),
    Bad("mysql-wrong-password", "access denied — check DB_USER and DB_PASS",
        lambda c: c.base(password="Zebra-Quartz-7731"), kind="mysql"),
    Bad("mysql-wrong-user", "access denied — check DB_USER and DB_PASS", lambda c: c.base(user="nobody_here"), kind="mysql"),
    Bad("mysql-unknown-database", "unknown database — check DB_NAME", lambda c: c.base(database="nt_no_such_db"), kind="mysql"),
    Bad("mysql-unknown-host", "cannot reach the server — check DB_HOST and DB_PORT",
        lambda c: c.base(host="no-such-db.invalid"), kind="mysql"),
    Bad("mysql-port-closed", "cannot reach the server — check DB_HOST and DB_PORT", lambda c: c.base(port="9"), kind="mysql"),
    Bad("mysql-unknown-table", "the database rejected the notes query",
        base_swap('table = "notes"', 'table = "no_such_notes"'), kind="mysql"),
    Bad("mysql-unknown-column", "the database rejected the notes query",
        base_swap('text_column = "note_text"', 'text_column = "body"'), kind="mysql"),
    Bad("mysql-query-syntax", "the database rejected the notes query",
        base_swap('table = "notes"', 'query = "SELECT FROM notes"'), kind="mysql"),
    Bad("mysql-results-is-notes", "is the notes table", results_table("notes"), kind="mysql"),
    Bad("mysql-results-in-unknown-database", "results.table", results_table("nt_no_such_db.pna_results"), kind="mysql"),
    Bad("mysql-seed-csv", "seed_csv is for sqlite sources",
        lambda c: swap(c.base(), 'table = "notes"', 'table = "notes"\nseed_csv = "x.csv"'), kind="mysql"),
    Bad("mysql-path", "path is for sqlite sources",
        lambda c: swap(c.base(), 'table = "notes"', 'table = "notes"\npath = "x.db"'), kind="mysql"),
]

# -- the model server and the model ----------------------------------------------------------------------------
SERVER = [
    Bad("host-not-an-address", "is not a server address", lambda c: swap(c.base(), c.url, "gpu-n57")),
    Bad("host-with-a-path", "is not a server address", lambda c: swap(c.base(), c.url, c.url + "/api")),
    Bad("host-with-credentials", "carries a user name or password",
        lambda c: swap(c.base(), c.url, c.url.replace("//", "//alice:T0ken-S3cret@"))),
    Bad("no-hosts", "no Ollama server given", lambda c: swap(c.base(), f'hosts = ["{c.url}"]', "")),
    Bad("ollama-host-env-garbage", "'::::' is not a server address", lambda c: swap(c.base(), f'hosts = ["{c.url}"]', ""),
        env={"OLLAMA_HOST": "::::"}),
    Bad("hosts-auto", 'hosts = "auto"', lambda c: swap(c.base(), f'hosts = ["{c.url}"]', 'hosts = "auto"')),
    Bad("hosts-auto-without-slurm", "there is no squeue here",
        lambda c: swap(c.base(), f'hosts = ["{c.url}"]', 'hosts = "auto"'), env={"PATH": "/nonexistent"}),
    Bad("duplicate-hosts", "the same host is listed twice",
        lambda c: swap(c.base(), f'hosts = ["{c.url}"]', f'hosts = ["{c.url}", "{c.url}/"]')),
    Bad("server-unreachable", "no Ollama server answers", lambda c: swap(c.base(), c.url, "http://127.0.0.1:9")),
    Bad("server-unknown-host", "no Ollama server answers: http://no-such-gpu.invalid:11434",
        lambda c: swap(c.base(), c.url, "http://no-such-gpu.invalid:11434")),
    Bad("server-not-ollama", "no Ollama server answers", lambda c: swap(c.base(), c.url, c.web_url)),
    Bad("model-not-pulled", "ollama pull mistral", base_swap('name = "llama3"', 'name = "mistral"')),
    Bad("model-name-missing", "the ollama backend needs a model name", base_swap('name = "llama3"\n', "")),
    Bad("gguf-missing", "no GGUF file", base_swap('backend = "ollama"', 'backend = "llamacpp"\ngguf = "missing.gguf"')),
    Bad("gguf-is-a-directory", "no GGUF file", base_swap('backend = "ollama"', 'backend = "llamacpp"\ngguf = "."')),
    Bad("gguf-not-a-model", "is not a GGUF model file",
        base_swap('backend = "ollama"', 'backend = "llamacpp"\ngguf = "notes.gguf"'),
        files={"notes.gguf": b"these are not weights\n" * 100}),
    Bad("gguf-cut-short", "llama.cpp cannot load", base_swap('backend = "ollama"', 'backend = "llamacpp"\ngguf = "cut.gguf"'),
        files={"cut.gguf": b"GGUF\x03\x00\x00\x00" + b"\x00" * 64}),
]

# -- the command line --------------------------------------------------------------------------------------------
COMMAND_LINE = [
    Bad("run-without-file", "argument --run: expected one argument", args=("--run",)),
    Bad("limit-zero", "--limit: must be at least 1", lambda c: c.base(), args=("--limit", "0", "--run", "{exp}")),
    Bad("limit-not-a-number", "--limit: 'ten' is not a whole number",
        lambda c: c.base(), args=("--run", "{exp}", "--limit", "ten")),
    Bad("ledger-without-subcommand", "required: SUBCOMMAND", args=("ledger",)),
    Bad("ledger-unknown-subcommand", "invalid choice: 'lsit'", args=("ledger", "lsit")),
    Bad("run-and-check", "cannot be combined", lambda c: c.base(), args=("--run", "{exp}", "check", "{exp}")),
    Bad("check-without-file", "the following arguments are required: FILE", args=("check",)),
    Bad("unknown-option", "unrecognized arguments: --dry-run", lambda c: c.base(), args=("--run", "{exp}", "--dry-run")),
    Bad("tui-without-terminal", "the TUI needs a terminal", args=()),
    Bad("ledger-option-without-dir", "argument --ledger: expected one argument", args=("ledger", "list", "--ledger")),
    Bad("ledger-is-a-file", "cannot write the ledger", lambda c: c.base(), args=("--run", "{exp}", "--ledger", "{tmp}/ledger-file"),
        files={"ledger-file": b"a file where the ledger directory should be"}),
    Bad("check-bad-file", "not valid TOML", lambda c: c.base() + "\n[model\n", args=("check", "{exp}")),
]

# -- [evaluation] (issue 15): refused when the file is read, before a note is sent ------------------------------
EVALUATION: list[Bad] = [
    Bad("evaluation-neither-gold", "give exactly one of gold_column or gold_query",
        lambda c: c.base() + "\n[evaluation]\nmap = {}\n"),
    Bad("evaluation-both-golds", "give exactly one of gold_column or gold_query",
        lambda c: c.base() + '\n[evaluation]\ngold_column = "gold"\ngold_query = "SELECT note_id, gold FROM notes"\n'),
    Bad("evaluation-misspelt-key", "evaluation.gold_colum: unknown key in [evaluation]",
        lambda c: c.base() + '\n[evaluation]\ngold_colum = "gold"\n'),
    Bad("evaluation-column-sql", "is not a plain column name",
        lambda c: c.base() + '\n[evaluation]\ngold_column = "gold; DROP TABLE notes"\n'),
    Bad("evaluation-query-two-statements", "evaluation.gold_query: the query must be one SELECT statement",
        lambda c: c.base() + '\n[evaluation]\ngold_query = "SELECT 1; DELETE FROM notes"\n'),
    Bad("evaluation-map-to-no-choice", "'Likely' is not a choice of response",
        lambda c: c.base() + '\n[evaluation]\ngold_column = "gold"\nmap = { "yes" = "Likely" }\n'),
    Bad("evaluation-field-is-text", "evaluation.field: 'explanation' is not a choice or bool field",
        lambda c: c.base() + '\n[evaluation]\ngold_column = "gold"\nfield = "explanation"\n'),
    Bad("evaluation-map-not-a-table", "evaluation.map",
        lambda c: c.base() + '\n[evaluation]\ngold_column = "gold"\nmap = "yes=(1) Likely"\n'),
]

# -- Slurm (issue 14): shards and profiles ------------------------------------------------------------------------
SLURM: list[Bad] = [
    Bad("shard-zero-of-zero", "--shard", lambda c: c.base(), args=("--run", "{exp}", "--shard", "0/0")),
    Bad("shard-past-count", "--shard", lambda c: c.base(), args=("--run", "{exp}", "--shard", "3/2")),
    Bad("shard-not-numbers", "--shard", lambda c: c.base(), args=("--run", "{exp}", "--shard", "x/y")),
    Bad("shard-of-zero", "--shard", lambda c: c.base(), args=("--run", "{exp}", "--shard", "1/0")),
    Bad("shard-with-sqlite", "SQLite", lambda c: c.base(), args=("--run", "{exp}", "--shard", "1/2")),
    Bad("shard-from-array-env-with-sqlite", "SQLite", lambda c: c.base(),
        env={"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"}),
    Bad("server-start-unknown-profile", "--profile gpu-huge: no such profile", args=("server", "start", "--profile",
        "gpu-huge")),
    Bad("server-stop-not-a-job-id", "'abc' is not a job id", args=("server", "stop", "abc")),
    Bad("submit-broken-file", "not valid TOML", lambda c: c.base() + "\n[model\n", args=("submit", "{exp}")),
    # issue 25: idle limits and a server for one run
    Bad("server-start-idle-not-a-duration", "argument --idle: 'abc' is not a duration",
        args=("server", "start", "--profile", "gpu-huge", "--idle", "abc")),
    Bad("submit-with-server-unknown-profile", "--with-server gpu-huge: no such profile", lambda c: c.base(),
        args=("submit", "{exp}", "--with-server", "gpu-huge")),
    # issue 25: pulls without a GPU, refused before anything is submitted
    Bad("models-pull-unknown-profile", "--profile gpu-huge: no such profile",
        args=("models", "pull", "llama3.1:8b", "--profile", "gpu-huge")),
    Bad("models-pull-gpu-profile", "--profile l40s asks for a GPU (gres = \"gpu:1\")",
        args=("models", "pull", "llama3.1:8b", "--profile", "l40s"),
        files={"user-config.toml": b'[profiles.l40s]\npartition = "l40s"\ngres = "gpu:1"\n'}),
    Bad("models-pull-over-quota", "at or over the 0.0001 GB quota",
        args=("models", "pull", "llama3.1:8b", "--profile", "cpu"),
        env={"OLLAMA_MODELS": "{tmp}/models", "NOTES_TUI_REGISTRY": "off"},
        files={"user-config.toml": b'[models]\nquota_gb = 0.0001\n\n[profiles.cpu]\npartition = "smp"\n',
               "models/blobs/sha256-" + "0" * 64: bytes(200_000)}),
    Bad("models-pull-profile-and-host", "--profile and --host cannot be combined",
        args=("models", "pull", "llama3.1:8b", "--profile", "cpu", "--host", "http://127.0.0.1:9")),
]

# -- [study] (issue 23): refused when the file is read, before a cell runs ------------------------------------------
STUDY: list[Bad] = [
    Bad("study-variant-without-note", "study.prompts.v2.user: the template never uses {note}",
        lambda c: c.base() + '\n[study]\n[study.prompts.v2]\nuser = "Is there pneumonia?"\n'),
    Bad("study-variant-unknown-placeholder", "study.prompts.v2.user: placeholder {mrn} is not provided",
        lambda c: c.base() + '\n[study]\n[study.prompts.v2]\nuser = "{mrn}: {note}"\n'),
    Bad("study-variant-bad-name", "study.prompts.\"v 2\": 'v 2' cannot name a prompt variant",
        lambda c: c.base() + '\n[study]\n[study.prompts."v 2"]\nsystem = "x"\n'),
    Bad("study-model-twice", "study.models: 'llama3' is listed twice",
        lambda c: c.base() + '\n[study]\nmodels = ["llama3", "llama3"]\n'),
    Bad("study-model-with-slash", "study.models[0]: 'a/b' is not a model name",
        lambda c: c.base() + '\n[study]\nmodels = ["a/b"]\n'),
    Bad("study-zero-repeats", "study.repeats", lambda c: c.base() + "\n[study]\nrepeats = 0\n"),
    Bad("study-misspelt-key", "study.repeat: unknown key in [study]", lambda c: c.base() + "\n[study]\nrepeat = 2\n"),
    Bad("study-embedded-with-models", "study.models: the embedded llamacpp backend runs one model",
        lambda c: swap(c.base(), 'backend = "ollama"', 'backend = "llamacpp"').replace('name = "llama3"\n', "")
        .replace(f'hosts = ["{c.url}"]\n', "") + '\n[study]\nmodels = ["llama3", "qwen2.5"]\n'),
    Bad("study-with-run-id", "a study runs one run per cell — leave --run-id out",
        lambda c: c.base() + "\n[study]\nrepeats = 2\n", args=("--run", "{exp}", "--run-id", "01HZZZZZZZZZZZZZZZZZZZZZZZ")),
    Bad("ledger-study-in-an-empty-ledger", "no runs recorded in", args=("ledger", "study", "nope")),
    Bad("ledger-study-format-with-json", "--json and --format html cannot be combined",
        args=("ledger", "study", "nope", "--format", "html", "--json")),
    Bad("ledger-study-unknown-format", "argument --format: invalid choice: 'pdf'",
        args=("ledger", "study", "nope", "--format", "pdf")),
]

CASES: list[Bad] = (FILE + KEYS + PROMPT + SOURCE + SQLITE_FILES + MYSQL + SERVER + COMMAND_LINE + EVALUATION + SLURM
                    + STUDY)
