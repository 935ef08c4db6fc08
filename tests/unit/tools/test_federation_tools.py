"""The policy tools with identities from OIDC ID tokens (issue 24): `policy explain --claims`
names the claim that failed, `policy test` cases take `identity: {issuer, claims}`, and
`policy diff` compares a representative token per `issuer:` rule (and `--claims`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regauth.cli import main

POLICY = """version: 1
service: reg
federated_issuers:
  - name: github
    issuer: https://token.actions.githubusercontent.com
    audience: https://registry.example.com
    jwks_uri: https://token.actions.githubusercontent.com/.well-known/jwks
    subject: "gh:{repository}"
rules:
  - comment: anyone pulls public
    account: any
    repository: "public/**"
    actions: [pull]
  - comment: acme main pushes its own repository
    issuer: github
    claims:
      repository_owner: acme
      ref: REF
    repository: "${claims.repository}"
    actions: [pull, push]
"""
ISS = "https://token.actions.githubusercontent.com"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    old = tmp_path / "old.yaml"
    old.write_text(POLICY.replace("REF", "refs/heads/main"))
    new = tmp_path / "new.yaml"
    new.write_text(POLICY.replace("REF", '"refs/heads/*"'))
    claims = tmp_path / "claims.json"
    claims.write_text(
        json.dumps(
            {"iss": ISS, "repository": "acme/app", "repository_owner": "acme",
             "ref": "refs/heads/dev"}
        )
    )  # fmt: skip
    return {"old": old, "new": new, "claims": claims}


def test_explain_names_the_claim_that_failed(files, capsys) -> None:
    code = main(["policy", "explain", str(files["old"]), "--claims", str(files["claims"]),
                 "repository:acme/app:push", "repository:public/x:pull"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "repository:acme/app:push: default deny" in out
    assert "claims.ref: refs/heads/main does not match 'refs/heads/dev'" in out
    assert "repository:public/x:pull: granted [pull] by rule 1" in out
    # Under the new policy, the same token pushes its own repository only.
    main(["policy", "explain", str(files["new"]), "--claims", str(files["claims"]), "--json",
          "repository:acme/app:push", "repository:acme/web:push"])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert [s["granted"] for s in doc["scopes"]] == [["push"], []]


def test_explain_refuses_claims_with_an_account_or_no_issuer(files, tmp_path, capsys) -> None:
    both = ["policy", "explain", str(files["old"]), "--claims", str(files["claims"]),
            "--account", "ci", "repository:a:pull"]  # fmt: skip
    assert main(both) == 2
    stranger = tmp_path / "stranger.json"
    stranger.write_text(json.dumps({"iss": "https://elsewhere.test", "repository": "a"}))
    assert main(["policy", "explain", str(files["old"]), "--claims", str(stranger),
                 "repository:a:pull"]) == 2  # fmt: skip
    assert "names no federated issuer" in capsys.readouterr().err


def test_policy_test_cases_with_claims(files, tmp_path, capsys) -> None:
    tests = tmp_path / "t.yaml"
    tests.write_text(f"""tests:
  - identity:
      issuer: github
      claims: {{repository: acme/app, repository_owner: acme, ref: refs/heads/main}}
    scope: "repository:acme/app:pull,push"
    granted: [pull, push]
  - identity:
      claims: {{iss: "{ISS}", repository: acme/app, repository_owner: acme, ref: refs/heads/x}}
    scope: "repository:acme/app:push"
    granted: []
  - identity: {{issuer: nope, claims: {{repository: a}}}}
    scope: "repository:a:pull"
    granted: []
""")
    code = main(["policy", "test", str(files["old"]), str(tests)])
    out = capsys.readouterr()
    assert "2 passed, 1 failed" in out.out, out
    assert "federated issuer 'nope' is not in the policy" in out.out + out.err
    assert code == 1


def test_diff_sees_a_claim_condition_change(files, capsys) -> None:
    code = main(["policy", "diff", str(files["old"]), str(files["new"])])
    out = capsys.readouterr().out
    assert code == 1
    assert "github token[repository_owner=acme,ref=refs/heads/x" in out
    assert "2 gained, 0 lost" in out
    code = main(["policy", "diff", str(files["old"]), str(files["new"]), "--claims",
                 str(files["claims"]), "--json"])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    subjects = {c["subject"] for c in doc["changes"]}
    assert "ID token claims.json" in subjects
