"""Models: the registered versions, the current one with its card, its plots from the model folder."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from db.model_versions import register_model_version
from tests.api.conftest import bearer
from tests.conftest import SHIPPED_MODEL


def test_before_any_worker_registers_a_model_there_is_no_current_one(
    client: FlaskClient, tokens: dict[str, str]
) -> None:
    assert client.get("/api/v1/models", headers=bearer(tokens["read"])).get_json() == {"models": []}
    response = client.get("/api/v1/models/current", headers=bearer(tokens["read"]))
    assert response.status_code == 404 and "start a worker" in response.get_json()["error"]["message"]


def test_the_current_model_comes_with_its_card_and_plot_links(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object]
) -> None:
    body = client.get("/api/v1/models/current", headers=bearer(tokens["read"])).get_json()
    assert body["version"] == model["version"] and body["is_current"] is True
    assert body["card"] == model and body["metrics"] == model["metrics"]
    assert set(body["plots"]) == set(model["plots"])  # type: ignore[call-overload]
    for url in body["plots"].values():
        response = client.get(url, headers=bearer(tokens["read"]))
        assert response.status_code == 200 and response.mimetype == "image/png"
        assert response.data[:8] == b"\x89PNG\r\n\x1a\n"


def test_models_are_listed_newest_first_with_one_current(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], sessions: sessionmaker[Session]
) -> None:
    with sessions.begin() as session:
        register_model_version(
            session=session,
            version="older-candidate",
            file=str(SHIPPED_MODEL),
            sha256="1" * 64,
            threshold=0.3,
            metrics={},
            card={"plots": {}},
            make_current=False,
        )
    models = client.get("/api/v1/models", headers=bearer(tokens["read"])).get_json()["models"]
    assert [(m["version"], m["is_current"]) for m in models] == [
        ("older-candidate", False),
        (model["version"], True),
    ]


def test_only_plots_the_card_names_are_served(
    client: FlaskClient, tokens: dict[str, str], model: dict[str, object], sessions: sessionmaker[Session]
) -> None:
    with sessions.begin() as session:
        register_model_version(
            session=session,
            version="sneaky",
            file=str(SHIPPED_MODEL),
            sha256="2" * 64,
            threshold=0.3,
            metrics={},
            card={"plots": {"keys": "../../../etc/passwd", "card": "brainscan.card.json"}},
            make_current=False,
        )
    read = bearer(tokens["read"])
    for url in (
        "/api/v1/models/sneaky/plots/keys",
        "/api/v1/models/sneaky/plots/card",
        f"/api/v1/models/{model['version']}/plots/not-a-plot",
        "/api/v1/models/nope/plots/roc",
    ):
        response = client.get(url, headers=read)
        assert response.status_code == 404, url
