"""The experiment files shipped in experiments/ load and say what the README says they say."""

from __future__ import annotations

from app.experiment import load_experiment
from tests.helpers.support import ROOT


def test_pneumonia_toml_is_the_sop_experiment(tmp_path):
    env = tmp_path / ".env"
    env.write_text("DB_USER=u\nDB_PASS=Hunter2-secret\nDB_HOST=db.example.edu\nDB_NAME=sspSB\n")
    env.chmod(0o600)
    text = (ROOT / "experiments" / "pneumonia.toml").read_text().replace('"~/.env"', f'"{env}"')
    exp_path = tmp_path / "pneumonia.toml"
    exp_path.write_text(text)
    exp = load_experiment(exp_path, environ={"OLLAMA_HOST": "gpu-n57:48362"})
    spec = exp.spec
    assert spec.name == "questionsPNAv1.1"
    assert exp.hosts == ("http://gpu-n57:48362",)
    assert spec.source.table == "PNA2_100_RadNotes" and spec.source.id_columns == ["patientvisitid", "accession"]
    assert spec.answer.fields["response"].choices == ["(1) Likely", "(2) Unlikely", "(3) Unable to say"]
    assert spec.answer.fallback["response"] == "(4) LLM output invalid"
    assert exp.mysql is not None and exp.mysql.database == "sspSB"
    assert "Hunter2-secret" not in repr(exp) and exp.mysql.password.get_secret_value() == "Hunter2-secret"


def test_demo_toml_uses_the_embedded_model_and_sqlite():
    exp = load_experiment(ROOT / "experiments" / "demo.toml")
    assert exp.spec.model.backend == "llamacpp" and exp.spec.source.kind == "sqlite"
    assert exp.seed_csv_path is not None and exp.seed_csv_path.is_file()
    assert exp.spec.model.options.num_ctx == 2048
