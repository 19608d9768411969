"""The Kaggle API: where the credentials are (never their values), the authenticated client, calls whose network and
HTTP errors become one line, and the competition's slug."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

from compkit.config import Config
from compkit.errors import PlatformError


def _kaggle_dirs() -> list[Path]:
    """Where the kaggle package looks for its files: $KAGGLE_CONFIG_DIR, else ~/.kaggle and ~/.config/kaggle."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return [Path(os.environ["KAGGLE_CONFIG_DIR"])]
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return [Path.home() / ".kaggle", xdg]


def credentials_source(alternative: str = "") -> str:
    """Where the Kaggle credentials are (a description such as ``KAGGLE_USERNAME/KAGGLE_KEY``), never their values.

    Raises:
        PlatformError: none of ``kaggle.json``, ``access_token``, ``KAGGLE_USERNAME``/``KAGGLE_KEY`` or
            ``KAGGLE_API_TOKEN`` is there.
    """
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    for folder in _kaggle_dirs():
        if (folder / "kaggle.json").is_file():
            _check_kaggle_json(folder / "kaggle.json")
            return str(folder / "kaggle.json")
        if (folder / "access_token").is_file():
            return str(folder / "access_token")
    where = " or ".join(str(d / "kaggle.json") for d in _kaggle_dirs())
    raise PlatformError(f"kaggle: no credentials: put your API token in {where} (chmod 600), or set KAGGLE_USERNAME "
                        f"and KAGGLE_KEY{alternative}; see README 'On a real competition'")


def _check_kaggle_json(path: Path) -> None:
    """Refuse a ``kaggle.json`` that is not a JSON object with ``username`` and ``key`` strings (values never shown).

    Raises:
        PlatformError: names the file and says how to replace it; nothing was sent to Kaggle.
    """
    try:
        token = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        token = None
    if not isinstance(token, dict) or not all(isinstance(token.get(k), str) and token.get(k) for k in ("username", "key")):
        raise PlatformError(f"{path}: not a Kaggle API token (a JSON object with \"username\" and \"key\"); nothing was sent; "
                            "download it again from kaggle.com/settings (Create New Token)")


def kaggle_api(alternative: str = ""):
    """An authenticated ``kaggle.api.kaggle_api_extended.KaggleApi``; ``alternative`` ends the no-credentials message.

    The package prints help and exits when it cannot authenticate; both are caught here.

    Raises:
        PlatformError: no credentials (checked before the package is imported), the package is not installed,
            or it refused the credentials.
    """
    source = credentials_source(alternative)
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            from kaggle.api.kaggle_api_extended import KaggleApi  # `import kaggle` authenticates and prints

            api = KaggleApi()
            api.authenticate()
    except ImportError:
        raise PlatformError("kaggle: the kaggle package is not installed; pip install 'compkit[kaggle]'") from None
    except SystemExit:
        raise PlatformError(f"kaggle: the credentials in {source} were not accepted; create a new API token on "
                            "kaggle.com/settings") from None
    except Exception as exc:  # an unreadable kaggle.json, or an access token checked online without network
        raise PlatformError(f"kaggle: could not use the credentials in {source} ({type(exc).__name__}); "
                            "check that file or variable, and the network") from None
    return api


def kaggle_call(what: str, slug: str, function, *args, **kwargs):
    """``function(*args, **kwargs)`` with the package's network and HTTP errors turned into one-line :class:`PlatformError`."""
    import requests

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return function(*args, **kwargs)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        hint = {401: "the credentials were refused; create a new API token on kaggle.com/settings",
                403: f"accept the competition's rules on https://www.kaggle.com/competitions/{slug}/rules",
                404: f"not found: check competition.slug ({slug!r}) and, for a bundle or kernel, bundle.owner",
                429: "too many requests (or no submissions left today); try again later"}
        raise PlatformError(f"kaggle: {what} failed with HTTP {status}; {hint.get(status, 'try again later')}") from None
    except requests.RequestException as exc:
        raise PlatformError(f"kaggle: cannot reach Kaggle to {what} ({type(exc).__name__}); check the network "
                            "(nothing local was changed)") from None
    except ValueError as exc:  # the package's own checks of its input (metadata files, ids), before any request
        raise PlatformError(f"kaggle: cannot {what}: {exc}") from None


def kaggle_slug(config: Config) -> str:
    """The Kaggle competition name; raises :class:`PlatformError` when the competition is not on Kaggle."""
    comp = config.competition
    if comp.platform != "kaggle":
        where = f" on {comp.url}" if comp.url else ""
        raise PlatformError(f"competition.platform is {comp.platform!r}: compkit talks only to Kaggle's API; "
                            f"upload and read scores by hand{where}, or set competition.platform = \"kaggle\" and slug")
    return comp.slug or comp.name

