"""The OpenAPI document is valid OpenAPI 3.1 and describes every API route with its methods."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from tests.api.conftest import bearer

API_PREFIXES = ("/api/", "/healthz", "/readyz", "/metrics")


def test_the_document_is_valid_openapi(client: FlaskClient, tokens: dict[str, str]) -> None:
    response = client.get("/api/v1/openapi.json", headers=bearer(tokens["read"]))
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.")
    validate(document)


def test_every_api_route_and_method_is_documented_and_nothing_else(
    app: Flask, client: FlaskClient, tokens: dict[str, str]
) -> None:
    document = client.get("/api/v1/openapi.json", headers=bearer(tokens["read"])).get_json()
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(API_PREFIXES):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            served |= {(path, method.lower()) for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == served
    for path, method in documented:
        operation = document["paths"][path][method]
        assert operation["summary"] and operation["responses"], (path, method)
        names = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
        assert names == set(re.findall(r"{(\w+)}", path)), path
