"""REST: the models workers have registered, the current one with its card, and its training plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, send_file, url_for

from api.context import sessions, settings
from api.errors import ApiError
from api.job_report import iso
from db.model_versions import current_model_version, list_model_versions
from db.models import ModelVersion
from training.card import upgrade

bp = Blueprint("models", __name__, url_prefix="/api/v1")
NO_MODEL = "no worker has registered a model yet: start a worker (brainscan worker)"


def model_report(model: ModelVersion, *, with_card: bool = False) -> dict[str, Any]:
    """A model version: identity, threshold, metrics, plot links; its whole card on request."""
    plots = model.card.get("plots") or {}
    report: dict[str, Any] = {
        "version": model.version,
        "is_current": model.is_current,
        "threshold": model.threshold,
        "sha256": model.sha256,
        "registered_at": iso(model.created_at),
        "metrics": model.metrics,
        "plots": {
            name: url_for("models.plot_route", version=model.version, name=name, _external=True)
            for name in plots
        },
    }
    if with_card:
        report["card"] = card_in_current_layout(model.card)
    return report


def card_in_current_layout(card: dict[str, Any]) -> dict[str, Any]:
    """A card recorded before recipes, in today's layout (`training.card.upgrade`); one made with
    an experiment since removed stays as it was recorded."""
    try:
        return upgrade(card)
    except ValueError:
        return card


def current_model_or_404() -> dict[str, Any]:
    """The current model's report with its card; 404 before any worker registered one."""
    with sessions(read_only=True)() as session:
        model = current_model_version(session=session)
        if model is None:
            raise ApiError(404, "no_model", NO_MODEL)
        return model_report(model, with_card=True)


@bp.get("/models")
def list_models_route() -> Response:
    """Every registered model version, newest first."""
    with sessions(read_only=True)() as session:
        models = [model_report(model) for model in list_model_versions(session=session)]
    return jsonify({"models": models})


@bp.get("/models/current")
def current_model_route() -> Response:
    """The model new jobs are scored with, and its card (metrics, threshold sweep, data, training)."""
    return jsonify(current_model_or_404())


def plot_file(model: ModelVersion, name: str) -> Path | None:
    """The PNG the card names `name`, beside the model file (or this host's model file); None if absent."""
    file_name = (model.card.get("plots") or {}).get(name)
    if not isinstance(file_name, str) or Path(file_name).name != file_name or not file_name.endswith(".png"):
        return None  # only plain names the card lists: nothing a request can steer elsewhere
    folders = [Path(model.file).parent, settings().model_path.parent]
    return next((folder / file_name for folder in folders if (folder / file_name).is_file()), None)


@bp.get("/models/<version>/plots/<name>")
def plot_route(version: str, name: str) -> Response:
    """One training plot (PNG) of a model version, by the name its card gives it."""
    with sessions(read_only=True)() as session:
        model = next((m for m in list_model_versions(session=session) if m.version == version), None)
        if model is None:
            raise ApiError(404, "not_found", f"there is no model version {version}")
        path = plot_file(model, name)
    if path is None:
        raise ApiError(404, "not_found", f"model {version} has no plot {name!r} on this host")
    return send_file(path, mimetype="image/png", max_age=3600)
