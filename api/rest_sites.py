"""REST: sites and their profiles, a threshold of their own set from their reviewed images.

A site is a DICOM file's manufacturer and station, else a folder job's top folder (db.sites). The
suggestion is the highest threshold that keeps the recall target on the site's reviewed images
(training.metrics.tune_threshold, the training's own rule), with the specificity it gives there.
Setting and clearing a profile need the `admin` scope, are audited, and keep every version.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from api.auth import current_actor
from api.context import sessions
from api.errors import ApiError
from api.job_report import iso
from db.audit import record_event
from db.model_versions import current_model_version
from db.models import ModelVersion, SiteProfile
from db.sites import clear_profile, profile_history, reviewed_scores, set_profile

bp = Blueprint("sites", __name__, url_prefix="/api/v1")
DEFAULT_RECALL = 0.95
MIN_REVIEWED = 20  # of each class, before a threshold is suggested


def profile_report(profile: SiteProfile) -> dict[str, Any]:
    return {
        "id": profile.id,
        "site": profile.site,
        "model_version": profile.model_version,
        "threshold": profile.threshold,
        "active": profile.active,
        "created_by": profile.created_by,
        "created_at": iso(profile.created_at),
        "retired_at": iso(profile.retired_at),
        "evidence": profile.evidence,
    }


def _model() -> ModelVersion:
    with sessions(read_only=True)() as session:
        model = current_model_version(session=session)
    if model is None:
        raise ApiError(503, "no_model", "no worker has registered a model yet")
    return model


def suggestion(site: str, recall_target: float) -> dict[str, Any]:
    """The threshold the site's reviewed images support at the recall target, and what it gives."""
    import numpy as np

    from training.metrics import compute_metrics, tune_threshold

    model = _model()
    with sessions(read_only=True)() as session:
        scores = reviewed_scores(session=session, site=site, model_version=model.version)
    labels = np.array([y for y, _ in scores], dtype=np.int64)
    probs = np.array([p for _, p in scores], dtype=np.float64)
    counts = {"tumour": int(labels.sum()), "no_tumour": int(len(labels) - labels.sum())}
    report: dict[str, Any] = {"site": site, "model_version": model.version, "recall_target": recall_target}
    report.update(reviewed=counts, model_threshold=model.threshold, threshold=None)
    if min(counts.values()) < MIN_REVIEWED:
        report["reason"] = f"needs at least {MIN_REVIEWED} reviewed images of each class"
        return report
    threshold = tune_threshold(labels, probs, recall_target)
    m = compute_metrics(labels, probs, threshold)
    return {**report, "threshold": threshold, "recall": m.recall, "specificity": m.specificity}


@bp.get("/sites/<path:site>/suggestion")
def suggestion_route(site: str) -> Response:
    """The threshold the site's reviews suggest (?recall=, default 0.95)."""
    try:
        target = float(request.args.get("recall", DEFAULT_RECALL))
    except ValueError:
        raise ApiError(400, "bad_request", "recall must be a number") from None
    if not 0.5 <= target <= 1:
        raise ApiError(400, "bad_request", "recall must lie between 0.5 and 1")
    return jsonify(suggestion(site, target))


@bp.get("/sites/<path:site>/profiles")
def profiles_route(site: str) -> Response:
    """Every version of the site's profile, newest first (the active one has `active`)."""
    with sessions(read_only=True)() as session:
        return jsonify(
            {
                "site": site,
                "profiles": [profile_report(p) for p in profile_history(session=session, site=site)],
            }
        )


@bp.post("/sites/<path:site>/profiles")
def set_profile_route(site: str) -> tuple[Response, int]:
    """Set the site's threshold for the current model (admin; audited): {"threshold": T}, or
    {"recall": R} to take the suggestion at that recall."""
    body = request.get_json(silent=True) or {}
    actor, model = current_actor(), _model()
    evidence: dict[str, Any] = {}
    if "recall" in body:
        evidence = suggestion(site, float(body["recall"]))
        threshold = evidence["threshold"]
        if threshold is None:
            raise ApiError(409, "conflict", f"no suggestion for {site}: {evidence.get('reason')}")
    else:
        threshold = body.get("threshold")
    if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise ApiError(400, "bad_request", "give a threshold between 0 and 1, or a recall target")
    with sessions().begin() as session:
        profile = set_profile(
            session=session,
            site=site,
            model_version=model.version,
            threshold=float(threshold),
            actor=actor,
            evidence=evidence,
        )
        record_event(
            session=session, actor=actor, action="site.profile", detail={"site": site, "threshold": threshold}
        )
        report = profile_report(profile)
    return jsonify(report), 201


@bp.delete("/sites/<path:site>/profiles")
def clear_profile_route(site: str) -> Response:
    """Retire the site's profile: its jobs take the model's threshold again (admin; audited)."""
    actor, model = current_actor(), _model()
    with sessions().begin() as session:
        retired = clear_profile(session=session, site=site, model_version=model.version)
        if retired is None:
            raise ApiError(404, "not_found", f"{site} has no profile in force for {model.version}")
        record_event(
            session=session, actor=actor, action="site.profile", detail={"site": site, "threshold": None}
        )
        report = profile_report(retired)
    return jsonify(report)
