"""Settings come from the environment and name what is missing."""

from __future__ import annotations

import pytest

from shared.config import DatabaseSettings, ProcessorSettings, load
from shared.errors import ConfigurationError


def test_database_url_alone_selects_the_direct_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """DATABASE_URL is enough, and it means the direct transport."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1/db")
    settings = load(DatabaseSettings)
    assert settings.transport == "direct"
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == "postgresql://u@127.0.0.1/db"


def test_supabase_keys_select_the_postgrest_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without DATABASE_URL, the Supabase URL and both keys mean PostgREST; new key names work."""
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co")
    monkeypatch.setenv("SUPABASE_SECRET_KEY", "sb_secret_x")
    monkeypatch.setenv("SUPABASE_PUBLISHABLE_KEY", "sb_publishable_y")
    settings = load(DatabaseSettings)
    assert settings.transport == "postgrest"
    assert settings.supabase_service_role_key is not None
    assert settings.supabase_service_role_key.get_secret_value() == "sb_secret_x"
    assert settings.supabase_anon_key is not None
    assert settings.supabase_anon_key.get_secret_value() == "sb_publishable_y"


def test_missing_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """With half a configuration, the error names each missing variable."""
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co")
    with pytest.raises(ConfigurationError) as caught:
        load(DatabaseSettings)
    message = str(caught.value)
    assert "DATABASE_URL" in message
    assert "SUPABASE_SERVICE_ROLE_KEY" in message
    assert "SUPABASE_ANON_KEY" in message
    assert "SUPABASE_URL," not in message


def test_malformed_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value of the wrong type names the variable and says what is wrong."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1/db")
    monkeypatch.setenv("DB_POOL_MAX_SIZE", "lots")
    with pytest.raises(ConfigurationError, match="DB_POOL_MAX_SIZE"):
        load(DatabaseSettings)


def test_secrets_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys never end up in a log line through the settings' repr."""
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "very-secret")
    monkeypatch.setenv("SUPABASE_ANON_KEY", "anon-key")
    assert "very-secret" not in repr(load(DatabaseSettings))


@pytest.mark.parametrize("secret", ["", "short", "x" * 31])
def test_short_cron_secret_is_refused(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    """A CRON_SECRET under 32 characters could be guessed: the processor refuses to start, with
    a message that names the setting and the length it needs but not the secret; 32 will do."""
    monkeypatch.setenv("CRON_SECRET", secret)
    with pytest.raises(ConfigurationError) as caught:
        load(ProcessorSettings)
    message = str(caught.value)
    assert "CRON_SECRET" in message
    assert "at least 32 characters" in message
    if secret:
        assert secret not in message

    monkeypatch.setenv("CRON_SECRET", secret.ljust(32, "c"))
    assert load(ProcessorSettings).cron_secret is not None
