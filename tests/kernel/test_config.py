import pytest

from aopkit import AopkitError, Kernel, hookimpl


class Capture:
    @hookimpl
    def register_models(self, register):
        register("cap", lambda model, kernel, **options: options)


def kernel_with(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    kernel = Kernel(environ={"AOPKIT_CONFIG": str(path)}, load_entrypoints=False)
    kernel.register(Capture(), "capture")
    return kernel


def test_options_come_from_the_config_file_and_arguments_win(tmp_path):
    kernel = kernel_with(
        tmp_path,
        """
[models.cap]
base_url = "http://127.0.0.1:8000/v1"
timeout = 10

[models."cap:big"]
timeout = 99
""",
    )
    assert kernel.model("cap:small") == {"base_url": "http://127.0.0.1:8000/v1", "timeout": 10}
    assert kernel.model("cap:big")["timeout"] == 99
    assert kernel.model("cap:big", timeout=1)["timeout"] == 1


def test_the_default_config_location_follows_xdg(tmp_path):
    (tmp_path / "aopkit").mkdir()
    (tmp_path / "aopkit" / "config.toml").write_text('[models.cap]\nregion = "eu"\n')
    kernel = Kernel(environ={"XDG_CONFIG_HOME": str(tmp_path)}, load_entrypoints=False)
    kernel.register(Capture(), "capture")
    assert kernel.model("cap:x") == {"region": "eu"}


def test_no_config_file_means_no_options(tmp_path):
    kernel = Kernel(environ={"AOPKIT_CONFIG": str(tmp_path / "none.toml")}, load_entrypoints=False)
    kernel.register(Capture(), "capture")
    assert kernel.model("cap:x") == {}


def test_a_broken_config_file_is_a_clear_error(tmp_path):
    kernel = kernel_with(tmp_path, "[models.cap\n")
    with pytest.raises(AopkitError, match=r"config file .*config\.toml"):
        kernel.model("cap:x")


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda p: p.write_bytes(b"a = '\xff'"), "invalid start byte"),
        (lambda p: p.write_text("a = " + "[" * 50_000), "nested too deeply"),
        (lambda p: p.mkdir(), "cannot read it: Is a directory"),
    ],
)
def test_a_damaged_config_file_is_a_clear_error(tmp_path, damage, problem):
    path = tmp_path / "config.toml"
    damage(path)
    kernel = Kernel(environ={"AOPKIT_CONFIG": str(path)}, load_entrypoints=False)
    kernel.register(Capture(), "capture")
    with pytest.raises(AopkitError, match=rf"config file {path}: .*{problem}"):
        kernel.model("cap:x")
