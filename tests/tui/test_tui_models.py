"""Screen 2, Models, driven with Pilot against the stand-in: the list and its sorting, pulls (progress, queue,
cancel, quota, wrong name, a server dying or failing mid-pull), delete after confirmation, details, quitting."""

from __future__ import annotations

from tests.helpers.tuikit import build_app, closed_url, rows, run, screen_text, until, write_config
from tests.standin.standin_ollama import StandinOllama, spawn_standin


async def open_models(pilot, app, url):
    await until(pilot, lambda: app.health(url).state == "up", what="server up")
    await pilot.press("2")
    await until(pilot, lambda: app.state.model_list(url).loaded_once, what="model list")


def names(app) -> list[str]:
    return list(rows(app, "models-table"))


async def pull(pilot, name: str) -> None:
    await pilot.press("p", *name, "enter")


@run
async def test_models_listed_with_details_columns_and_the_quota(tmp_path, standin):
    app = build_app(tmp_path, {"OLLAMA_HOST": standin.url})
    async with app.run_test(size=(120, 40)) as pilot:
        await open_models(pilot, app, standin.url)
        table = rows(app, "models-table")
        assert table["llama3:latest"][1:5] == ("4.7 GB", "8.0B", "Q4_0", "llama")
        assert table["llama3:latest"][5] == "2025-08-01" and len(table["llama3:latest"][6]) == 12
        text = screen_text(app)
        assert "8.8 GB of 75 GB (12%)" in text and "Models on 127.0.0.1:" in text and "2 models" in text


@run
async def test_sorting_by_name_size_and_modified_and_back(tmp_path):
    with StandinOllama(models=("qwen2.5:7b", "llama3.1:70b", "mistral", "smollm2:135m")) as server:
        app = build_app(tmp_path, {"OLLAMA_HOST": server.url})
        async with app.run_test(size=(80, 24)) as pilot:
            await open_models(pilot, app, server.url)
            assert names(app) == ["llama3.1:70b", "mistral:latest", "qwen2.5:7b", "smollm2:135m"]
            await pilot.press("s")  # biggest first
            sizes = {m.name: m.size for m in app.state.model_list(server.url).entries}
            assert names(app) == sorted(sizes, key=lambda n: -sizes[n])
            await pilot.press("s")  # again: reversed
            assert names(app) == sorted(sizes, key=lambda n: sizes[n])
            await pilot.press("n")
            assert names(app) == sorted(sizes)
            await pilot.press("n")
            assert names(app) == sorted(sizes, reverse=True)
            assert "sort: name ↓" in screen_text(app)


@run
async def test_a_pull_shows_progress_then_the_model_appears(tmp_path):
    with StandinOllama(pull_seconds=2.0) as server:
        app = build_app(tmp_path, {"OLLAMA_HOST": server.url})
        async with app.run_test(size=(80, 24)) as pilot:
            await open_models(pilot, app, server.url)
            await pull(pilot, "llama3.1:8b")
            job = app.pulls.pulls[-1]
            seen = []
            while job.active:
                await pilot.pause(0.25)
                if job.fraction is not None:
                    seen.append(job.fraction)
                    if 0 < job.fraction < 1:
                        text = screen_text(app)
                        assert "llama3.1:8b" in text and "MB/s" in text and "ETA" in text and "%" in text
            assert job.state == "done", job.error
            assert len(set(seen)) >= 3 and seen == sorted(seen), seen  # it moved, forward only
            await until(pilot, lambda: "llama3.1:8b" in names(app), what="the pulled model listed")
            assert "pulled, 4.7 GB" in screen_text(app)


@run
async def test_pulls_queue_one_at_a_time_and_cancel_stops_one(tmp_path):
    with StandinOllama(pull_seconds=30.0) as server:
        app = build_app(tmp_path, {"OLLAMA_HOST": server.url})
        async with app.run_test(size=(80, 24)) as pilot:
            await open_models(pilot, app, server.url)
            await pull(pilot, "llama3.1:8b")
            await pull(pilot, "mistral")
            first, second = app.pulls.pulls
            await until(pilot, lambda: first.done > 0, what="first pull moving")
            assert (first.state, second.state) == ("pulling", "queued")
            assert "queue mistral" in screen_text(app)
            # the message names the pull c cancels: the running one, not the one just queued (issue 24 item 18)
            assert app.screen.query_one("#status").render().plain == \
                "mistral queued behind llama3.1:8b · c cancels llama3.1:8b (pulling now)"
            await pilot.press("c")  # cancels the running pull; the queued one starts
            await until(pilot, lambda: first.state == "cancelled" and second.state == "pulling", what="next pull")
            await until(pilot, lambda: server.stats()["pulls_cancelled"] == 1, what="the server saw the cancel")
            await pilot.press("c")
            await until(pilot, lambda: second.state == "cancelled", what="second cancelled")
            await pilot.pause(0.3)
            assert "llama3.1:8b" not in names(app) and "mistral:latest" not in names(app)
            assert "cancelled at" in screen_text(app)


@run
async def test_a_pull_past_the_quota_is_flagged_as_soon_as_its_size_is_known(tmp_path):
    write_config(tmp_path / "user-config.toml", quota_gb=6)
    with StandinOllama(pull_seconds=3.0) as server:  # llama3 (4.7 GB) is there; 4.7 GB more passes 6 GB
        app = build_app(tmp_path, {"OLLAMA_HOST": server.url})
        async with app.run_test(size=(80, 24)) as pilot:
            await open_models(pilot, app, server.url)
            await pull(pilot, "llama3.1:8b")
            job = app.pulls.pulls[-1]
            await until(pilot, lambda: job.over_quota is not None, what="quota flag")
            assert job.state == "pulling" and job.fraction < 0.5  # flagged early, the user decides
            assert "over the 6 GB quota" in job.over_quota
            await pilot.pause(0.3)
            assert "over quota" in screen_text(app)


@run
async def test_a_wrong_name_and_a_server_side_error_end_in_one_line(tmp_path):
    with StandinOllama(pull_seconds=1.0, pull_fail_at=0.5) as server:
        app = build_app(tmp_path, {"OLLAMA_HOST": server.url})
        async with app.run_test(size=(120, 40)) as pilot:
            await open_models(pilot, app, server.url)
            await pull(pilot, "no-such-model:1b")
            await pull(pilot, "mistral")
            bad, failing = app.pulls.pulls
            await until(pilot, lambda: not failing.active, what="both pulls ended")
            assert bad.state == failing.state == "failed"
            assert "'no-such-model:1b' is not in the registry" in bad.error and bad.wrong_name
            assert "stopped the pull: max retries exceeded" in failing.error
            await pilot.pause(0.3)
            text = screen_text(app)
            assert "is not in the registry" in text and "Traceback" not in text
            await pilot.press("p", *"bad name!", "enter")  # not even a name: the dialog says so, nothing queued
            assert "is not a model name" in app.screen.query_one("#error").render().plain
            await pilot.press("escape")
            assert len(app.pulls.pulls) == 2


@run
async def test_a_server_that_dies_mid_pull_ends_the_pull_in_one_line(tmp_path):
    server = spawn_standin(pull_seconds=30.0)
    app = build_app(tmp_path, {"OLLAMA_HOST": server.url})
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await open_models(pilot, app, server.url)
            await pull(pilot, "llama3.1:8b")
            job = app.pulls.pulls[-1]
            await until(pilot, lambda: job.done > 0, what="pull moving")
            server.kill()
            await until(pilot, lambda: job.state == "failed", what="pull failed")
            assert "closed the connection during the pull" in job.error and "pull again to resume" in job.error
            await pilot.pause(0.3)
            assert "closed the connection" in screen_text(app)
            app.poll_servers()
            await until(pilot, lambda: app.health(server.url).state == "down", what="down")
    finally:
        server.stop()


@run
async def test_delete_asks_naming_model_and_size_then_deletes(tmp_path, standin):
    app = build_app(tmp_path, {"OLLAMA_HOST": standin.url})
    async with app.run_test(size=(80, 24)) as pilot:
        await open_models(pilot, app, standin.url)
        assert app.screen.query_one("#models-table").selected_key == "llama3:latest"
        await pilot.press("d")
        question = app.screen.query_one(".question").render().plain
        assert "Delete llama3:latest (4.7 GB) from" in question
        await pilot.press("n")
        assert "llama3:latest" in names(app) and standin.stats()["deleted"] == 0
        await pilot.press("d", "y")
        await until(pilot, lambda: "llama3:latest" not in names(app), what="model gone")
        assert standin.stats()["deleted"] == 1 and names(app) == ["qwen2.5:7b"]
        assert "deleted llama3:latest (4.7 GB)" in screen_text(app)


@run
async def test_details_show_context_length_template_parameters_license(tmp_path, standin):
    app = build_app(tmp_path, {"OLLAMA_HOST": standin.url})
    async with app.run_test(size=(120, 40)) as pilot:
        await open_models(pilot, app, standin.url)
        await pilot.press("i")
        await until(pilot, lambda: "context length" in app.screen.query_one("#details").render().plain,
                    what="details")
        body = app.screen.query_one("#details").render().plain
        assert "context length 8192" in " ".join(body.split()) and "stand-in license" in body
        assert "{{ .System }}" in body and 'stop' in body
        digest = next(m.digest for m in app.state.model_list(standin.url).entries if m.name == "llama3:latest")
        assert digest in body  # what the 80-column table leaves out is here
        await pilot.press("escape")
        assert app.screen.id != "details" and "Models on" in screen_text(app)


@run
async def test_a_server_that_is_down_says_so_on_the_models_screen(tmp_path):
    down = closed_url()
    app = build_app(tmp_path, {"OLLAMA_HOST": down})
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: app.state.model_list(down).loaded_once, what="model list attempt")
        text = screen_text(app)
        assert "does not answer (connection refused)" in text and "squeue --me" in text


@run
async def test_quit_asks_while_a_pull_runs_and_leaves_it_running(tmp_path, standin):
    """A pull is a process of its own (issue 24 item 11): quitting says it goes on, and it does (the whole story, to
    the model on the server and a reopened app, is in test_tui_pulls_detached.py)."""
    import os
    import signal

    from ledger.procinfo import pid_alive

    standin.configure(pull_seconds=30.0)
    app = build_app(tmp_path, {"OLLAMA_HOST": standin.url})
    async with app.run_test(size=(80, 24)) as pilot:
        await open_models(pilot, app, standin.url)
        await pull(pilot, "llama3.1:8b")
        job = app.pulls.pulls[-1]
        await until(pilot, lambda: job.done > 0, what="pull moving")
        pid = app.pulls.pid(job)
        await pilot.press("q")
        question = app.screen.query_one(".question").render().plain
        assert question.startswith("1 pull goes on: llama3.1:8b on ") and "reopen notes-tui to follow it" in question
        await pilot.press("n")
        assert app.is_running and job.state == "pulling"
        await pilot.press("q", "y")
    assert not app.is_running
    try:
        assert pid_alive(pid) and standin.stats()["pulls_cancelled"] == 0  # still pulling without the app
    finally:
        os.kill(pid, signal.SIGTERM)


@run
async def test_cloud_models_are_marked_and_an_openai_server_lists_what_it_serves(tmp_path):
    """Ollama 0.13 lists a cloud model beside local ones: marked `cloud`, with the line that runs refuse it. A vLLM
    server lists the models it serves: its kind on Servers, no quota, and pull or delete say why not."""
    with StandinOllama(version="0.13.1", cloud_models=("gpt-oss:120b-cloud",)) as ollama, \
            StandinOllama(flavor="vllm", models=("Qwen/Qwen2.5-7B-Instruct",)) as vllm:
        write_config(tmp_path / "user-config.toml", [(ollama.url, "gpu-a"), (vllm.url, "vllm-b")])
        app = build_app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            # the table, not the state: the row is redrawn a moment after the health check lands
            await until(pilot, lambda: rows(app, "servers-table").get(vllm.url, ())[3:5] == ("openai", "0.11.2"),
                        what="the vLLM server's row")
            await open_models(pilot, app, ollama.url)
            table = rows(app, "models-table")
            assert table["gpt-oss:120b-cloud"][1] == "cloud" and table["llama3:latest"][1] == "4.7 GB"
            assert "cloud: gpt-oss:120b-cloud runs on ollama.com: a run sends it no note" in screen_text(app)
            await pilot.press("1", "down", "enter")  # the vLLM server's models
            await until(pilot, lambda: list(rows(app, "models-table")) == ["Qwen/Qwen2.5-7B-Instruct"],
                        what="the served models in the table")
            served = "served models — an OpenAI-compatible server serves the model it was started with"
            await until(pilot, lambda: served in screen_text(app), what="the served-models line")
            assert "of 75 GB" not in screen_text(app)  # no quota for a server that holds no pulled models
            await pilot.press("p")
            assert "nothing to pull or delete here" in screen_text(app)
            assert vllm.stats()["requests"] >= 1 and ollama.stats()["pulls"] == 0


def test_a_pull_with_every_byte_in_says_verifying_not_a_stalled_rate():
    from app.cluster.present import pull_line
    from app.cluster.pulls import PULLING, Pull

    pull = Pull(id=1, url="http://x", name="llama3.1:8b")
    pull.state, pull.total, pull.done, pull.rate, pull.phase = PULLING, 4_700_000_000, 4_700_000_000, 0.0, "pulling 6a0746"
    assert pull_line(pull) == "llama3.1:8b  4.7 GB  100%  verifying"
    pull.phase = "verifying sha256 digest"
    assert pull_line(pull) == "llama3.1:8b  4.7 GB  100%  verifying"
    pull.phase = "writing manifest"
    assert pull_line(pull) == "llama3.1:8b  4.7 GB  100%  writing the manifest"
    pull.done, pull.phase, pull.rate = 2_100_000_000, "pulling 6a0746", 38.2e6
    assert pull_line(pull).startswith("llama3.1:8b  2.1 GB / 4.7 GB  45%  38.2 MB/s  ETA ")


@run
async def test_a_server_that_goes_down_keeps_its_list_marked_last_known_and_one_never_reached_is_unknown(tmp_path,
                                                                                                      monkeypatch):
    """Issue 24 item 5: not "0 models" and "quota ???". The health rounds are pushed out to 10 minutes, so "down"
    can only come from the probe made right after the failed list (without a deadline that a loaded machine misses)."""
    import app.tui.app as tui_app

    monkeypatch.setattr(tui_app, "POLL_S", 600.0)
    server = StandinOllama(models=("llama3", "qwen2.5:7b"))
    server.__enter__()
    never = closed_url()
    write_config(tmp_path / "user-config.toml", servers=[(never, "never")])
    app = build_app(tmp_path, {"OLLAMA_HOST": server.url})
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.health(server.url).state == "up", what="server up")
            app.screen.query_one("#servers-table").select_key(server.url)
            await pilot.press("enter")
            await until(pilot, lambda: app.state.model_list(server.url).loaded_once, what="model list")
            await until(pilot, lambda: "2 models" in screen_text(app), what="the list")
            server.__exit__(None, None, None)
            await pilot.press("r")  # asked again now that it is gone: down at once, not at the next health round
            await until(pilot, lambda: app.state.model_list(server.url).error is not None, what="the failed list")
            await until(pilot, lambda: "2 models last known, " in screen_text(app) and " · down" in screen_text(app),
                        what="down and last known")
            text = screen_text(app)
            assert f"Models on {server.url.removeprefix('http://')} · down" in text
            assert names(app) == ["llama3:latest", "qwen2.5:7b"]  # the list kept, not emptied
            assert "(last known)" in text and "the list shown is the last known" in " ".join(text.split())

            await pilot.press("1")
            app.screen.query_one("#servers-table").select_key(never)
            await pilot.press("enter")
            await until(pilot, lambda: app.state.model_list(never).loaded_once, what="the never-reached list")
            await until(pilot, lambda: "models unknown (never reached)" in screen_text(app), what="unknown")
            text = screen_text(app)
            assert "0 models" not in text and "???" not in text
            assert "use unknown (the server was never reached)" in text
    finally:
        server.__exit__(None, None, None)
