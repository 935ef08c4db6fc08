import pytest

from regauth.protocol.routes import MAX_PATH_LENGTH
from regauth.protocol.routes import RouteError
from regauth.protocol.routes import check_canonical
from regauth.protocol.routes import is_registry_path
from regauth.protocol.routes import match_route
from regauth.protocol.routes import parse_query
from tests.unit.helpers import DIGEST

OTHER = "sha256:" + "b" * 64
UPLOAD = "/v2/a/b/blobs/uploads/3f9c2a1e-uuid_x.y="


@pytest.mark.parametrize(
    ("method", "target", "kind", "name", "ref", "required"),
    [
        ("GET", "/v2/", "base", None, None, []),
        ("HEAD", "/v2/", "base", None, None, []),
        ("GET", "/v2/_catalog", "catalog", None, None, ["registry:catalog:*"]),
        ("GET", "/v2/_catalog?n=10&last=a", "catalog", None, None, ["registry:catalog:*"]),
        ("GET", "/v2/a/b/tags/list", "tags", "a/b", None, ["repository:a/b:pull"]),
        ("HEAD", "/v2/a/b/tags/list", "tags", "a/b", None, ["repository:a/b:pull"]),
        ("GET", "/v2/a/b/tags/list?n=5", "tags", "a/b", None, ["repository:a/b:pull"]),
        ("GET", "/v2/a/b/manifests/latest", "manifest", "a/b", "latest", ["repository:a/b:pull"]),
        (
            "HEAD",
            "/v2/a/b/manifests/v1.2_3-x",
            "manifest",
            "a/b",
            "v1.2_3-x",
            ["repository:a/b:pull"],
        ),
        ("GET", f"/v2/a/b/manifests/{DIGEST}", "manifest", "a/b", DIGEST, ["repository:a/b:pull"]),
        (
            "PUT",
            "/v2/a/b/manifests/latest",
            "manifest",
            "a/b",
            "latest",
            ["repository:a/b:pull,push"],
        ),
        (
            "PUT",
            f"/v2/a/b/manifests/{DIGEST}",
            "manifest",
            "a/b",
            DIGEST,
            ["repository:a/b:pull,push"],
        ),
        (
            "DELETE",
            f"/v2/a/b/manifests/{DIGEST}",
            "manifest",
            "a/b",
            DIGEST,
            ["repository:a/b:delete"],
        ),
        (
            "DELETE",
            "/v2/a/b/manifests/latest",
            "manifest",
            "a/b",
            "latest",
            ["repository:a/b:delete"],
        ),
        ("GET", f"/v2/a/b/blobs/{DIGEST}", "blob", "a/b", DIGEST, ["repository:a/b:pull"]),
        ("HEAD", f"/v2/a/b/blobs/{DIGEST}", "blob", "a/b", DIGEST, ["repository:a/b:pull"]),
        ("DELETE", f"/v2/a/b/blobs/{DIGEST}", "blob", "a/b", DIGEST, ["repository:a/b:delete"]),
        (
            "POST",
            "/v2/a/b/blobs/uploads/",
            "upload-start",
            "a/b",
            None,
            ["repository:a/b:pull,push"],
        ),
        (
            "POST",
            f"/v2/a/b/blobs/uploads/?digest={DIGEST}",
            "upload-start",
            "a/b",
            None,
            ["repository:a/b:pull,push"],
        ),
        ("PATCH", UPLOAD, "upload", "a/b", "3f9c2a1e-uuid_x.y=", ["repository:a/b:pull,push"]),
        (
            "PUT",
            f"{UPLOAD}?digest={DIGEST}",
            "upload",
            "a/b",
            "3f9c2a1e-uuid_x.y=",
            ["repository:a/b:pull,push"],
        ),
        (
            "PUT",
            f"{UPLOAD}?_state=abc&digest={DIGEST}",
            "upload",
            "a/b",
            "3f9c2a1e-uuid_x.y=",
            ["repository:a/b:pull,push"],
        ),
        ("GET", UPLOAD, "upload", "a/b", "3f9c2a1e-uuid_x.y=", ["repository:a/b:pull"]),
        ("DELETE", UPLOAD, "upload", "a/b", "3f9c2a1e-uuid_x.y=", ["repository:a/b:delete"]),
        ("GET", f"/v2/a/b/referrers/{DIGEST}", "referrers", "a/b", DIGEST, ["repository:a/b:pull"]),
        (
            "GET",
            f"/v2/a/b/referrers/{DIGEST}?artifactType=x",
            "referrers",
            "a/b",
            DIGEST,
            ["repository:a/b:pull"],
        ),
    ],
)
def test_route_table(method, target, kind, name, ref, required):
    route = match_route(method, target)
    assert route.kind == kind
    assert route.method == method
    assert route.path == target.partition("?")[0]
    assert route.repository == name
    assert route.reference == ref
    assert route.required_strings == required


@pytest.mark.parametrize(
    ("target", "name", "ref"),
    [
        ("/v2/a/manifests/b/manifests/c", "a/manifests/b", "c"),
        ("/v2/manifests/manifests/latest", "manifests", "latest"),
        (f"/v2/blobs/blobs/{DIGEST}", "blobs", DIGEST),
        (f"/v2/a/blobs/b/blobs/{DIGEST}", "a/blobs/b", DIGEST),
        ("/v2/tags/tags/list", "tags", None),
        ("/v2/a/tags/list/manifests/x", "a/tags/list", "x"),
        ("/v2/a/blobs/uploads/manifests/x", "a/blobs/uploads", "x"),
    ],
)
def test_names_may_contain_route_keywords(target, name, ref):
    route = match_route("GET", target)
    assert route.repository == name
    assert route.reference == ref
    assert route.required_strings == [f"repository:{name}:pull"]


def test_cross_repository_mount_needs_pull_on_the_source():
    route = match_route("POST", f"/v2/dst/app/blobs/uploads/?mount={DIGEST}&from=src/app")
    assert route.required_strings == ["repository:dst/app:pull,push", "repository:src/app:pull"]


def test_mount_from_the_same_repository_adds_nothing():
    route = match_route("POST", f"/v2/a/blobs/uploads/?mount={DIGEST}&from=a")
    assert route.required_strings == ["repository:a:pull,push"]


def test_from_without_mount_still_needs_pull_on_the_source():
    route = match_route("POST", "/v2/a/blobs/uploads/?from=b")
    assert route.required_strings == ["repository:a:pull,push", "repository:b:pull"]


def test_mount_without_from_needs_only_the_target():
    route = match_route("POST", f"/v2/a/blobs/uploads/?mount={DIGEST}")
    assert route.required_strings == ["repository:a:pull,push"]


@pytest.mark.parametrize(
    ("method", "target", "status", "code"),
    [
        # duplicated or ambiguous query parameters
        ("POST", f"/v2/a/blobs/uploads/?mount={DIGEST}&from=b&from=c", 400, "UNSUPPORTED"),
        ("POST", f"/v2/a/blobs/uploads/?mount={DIGEST}&from=b&from=b", 400, "UNSUPPORTED"),
        ("POST", f"/v2/a/blobs/uploads/?mount={DIGEST}&mount={OTHER}&from=b", 400, "UNSUPPORTED"),
        ("POST", f"/v2/a/blobs/uploads/?mount={DIGEST};from=b", 400, "UNSUPPORTED"),
        ("POST", f"/v2/a/blobs/uploads/?mount={DIGEST}&from=b;x", 400, "UNSUPPORTED"),
        ("PUT", f"{UPLOAD}?digest={DIGEST}&digest={OTHER}", 400, "UNSUPPORTED"),
        # invalid values
        ("POST", "/v2/a/blobs/uploads/?mount=sha256:abc&from=b", 400, "DIGEST_INVALID"),
        ("POST", f"/v2/a/blobs/uploads/?mount={DIGEST}&from=B/x", 400, "NAME_INVALID"),
        ("POST", f"/v2/a/blobs/uploads/?mount={DIGEST}&from=a/../b", 400, "NAME_INVALID"),
        ("POST", f"/v2/a/blobs/uploads/?mount={DIGEST}&from=", 400, "NAME_INVALID"),
        ("PUT", f"{UPLOAD}?digest=sha256:zz", 400, "DIGEST_INVALID"),
        ("PUT", f"{UPLOAD}?digest=md5:{'a' * 32}", 400, "DIGEST_INVALID"),
        ("PUT", f"{UPLOAD}?digest=sha256:{'A' * 64}", 400, "DIGEST_INVALID"),
        ("PUT", f"{UPLOAD}?digest=sha256:{'a' * 63}", 400, "DIGEST_INVALID"),
        ("POST", "/v2/a/blobs/uploads/?digest=nope", 400, "DIGEST_INVALID"),
        ("PUT", f"{UPLOAD}?digest=", 400, "DIGEST_INVALID"),
    ],
)
def test_query_refusals(method, target, status, code):
    with pytest.raises(RouteError) as e:
        match_route(method, target)
    assert (e.value.status, e.value.code) == (status, code)


@pytest.mark.parametrize(
    "target",
    [
        "/v2/a%2Fb/manifests/latest",
        "/v2/a%2fb/manifests/latest",
        "/v2/a/%2E%2E/b/manifests/latest",
        "/v2/a/%2e/manifests/latest",
        "/v2/a%5Cb/manifests/latest",
        "/v2/a%5cb/manifests/latest",
        "/v2/a%3Ab/manifests/latest",
        "/v2/a/manifests/lat%65st",
        "/v2/_catalog%2F",
        "/v2%2F",
        "/v2/a//b/manifests/latest",
        "//v2/a/manifests/latest",
        "/v2//a/manifests/latest",
        "/v2/a/manifests//latest",
        "/v2/a/../b/manifests/latest",
        "/v2/../v2/a/manifests/latest",
        "/v2/./a/manifests/latest",
        "/v2/a/./manifests/latest",
        "/v2/a/manifests/..",
        "/v2/a/manifests/.",
        "/v2/a\\b/manifests/latest",
        "/v2\\a/manifests/latest",
        "/v2/a/manifests/latest\r\n",
        "/v2/a/manifests/lätest",
        "/v2/a\x00/manifests/latest",
        "/v2/A/manifests/latest",
        "/v2/a_/manifests/latest",
        "/v2/-a/tags/list",
        "/v2/a..b/tags/list",
        f"/v2/a___b/blobs/{DIGEST}",
    ],
)
def test_non_canonical_paths_and_bad_names_are_name_invalid(target):
    with pytest.raises(RouteError) as e:
        match_route("GET", target)
    assert (e.value.status, e.value.code) == (400, "NAME_INVALID")


def test_overlong_path_is_refused():
    with pytest.raises(RouteError) as e:
        match_route("GET", "/v2/" + "a/" * (MAX_PATH_LENGTH // 2) + "tags/list")
    assert (e.value.status, e.value.code) == (414, "NAME_INVALID")


def test_repository_name_longer_than_255_is_name_invalid():
    name = "/".join(["abcdefghij"] * 24)  # 263 characters, each component valid
    assert len(name) > 255
    with pytest.raises(RouteError) as e:
        match_route("GET", f"/v2/{name}/manifests/latest")
    assert (e.value.status, e.value.code) == (400, "NAME_INVALID")


def test_overlong_query_is_refused():
    with pytest.raises(RouteError) as e:
        match_route("GET", "/v2/a/tags/list?n=" + "1" * 5000)
    assert e.value.status == 414


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("/v2/a/manifests/-latest", "TAG_INVALID"),
        ("/v2/a/manifests/" + "t" * 129, "TAG_INVALID"),
        ("/v2/a/manifests/", "TAG_INVALID"),
        ("/v2/a/manifests/sha256:", "DIGEST_INVALID"),
        ("/v2/a/manifests/sha256:ab!", "DIGEST_INVALID"),
        ("/v2/a/blobs/latest", "DIGEST_INVALID"),
        ("/v2/a/blobs/sha256:", "DIGEST_INVALID"),
        ("/v2/a/referrers/latest", "DIGEST_INVALID"),
    ],
)
def test_bad_references(target, code):
    with pytest.raises(RouteError) as e:
        match_route("GET", target)
    assert (e.value.status, e.value.code) == (400, code)


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/v2/a/blobs/sha256:zz"),
        ("GET", f"/v2/a/blobs/sha256:{'A' * 64}"),
        ("GET", f"/v2/a/blobs/sha256:{'a' * 63}"),
        ("DELETE", f"/v2/a/blobs/sha512:{'a' * 64}"),
        ("GET", f"/v2/a/blobs/md5:{'a' * 32}"),
        ("GET", "/v2/a/manifests/sha256:zz"),
        ("PUT", f"/v2/a/manifests/sha256:{'a' * 65}"),
        ("GET", f"/v2/a/manifests/unknown:{'a' * 64}"),
        ("GET", f"/v2/a/referrers/sha256:{'G' * 64}"),
    ],
)
def test_digests_in_paths_are_checked_strictly(method, target):
    # The route regexes only shape-match digests; the algorithm and hex length are checked too.
    with pytest.raises(RouteError) as e:
        match_route(method, target)
    assert (e.value.status, e.value.code) == (400, "DIGEST_INVALID")


@pytest.mark.parametrize(("algorithm", "length"), [("sha256", 64), ("sha384", 96), ("sha512", 128)])
def test_known_digest_algorithms_are_accepted(algorithm, length):
    digest = f"{algorithm}:{'0' * length}"
    assert match_route("GET", f"/v2/a/blobs/{digest}").reference == digest
    assert match_route("GET", f"/v2/a/manifests/{digest}").reference == digest


def test_bad_upload_id():
    with pytest.raises(RouteError) as e:
        match_route("PATCH", "/v2/a/blobs/uploads/bad!id")
    assert (e.value.status, e.value.code) == (404, "BLOB_UPLOAD_INVALID")


@pytest.mark.parametrize(
    "target",
    [
        "/v2",
        "/v2/_catalog/",
        "/v2/x/tags/list/",
        "/v2/x/tags/",
        "/v2/x/tags",
        "/v2/x/manifests/latest/",
        f"/v2/x/blobs/{DIGEST}/",
        "/v2/x/blobs/uploads/u/",
        "/v2/x",
        "/v2/x/",
        "/v2/x/unknown/thing",
        "/v3/",
        "/",
        "/v2/_catalogs",
    ],
)
def test_unknown_routes_are_404_unsupported(target):
    with pytest.raises(RouteError) as e:
        match_route("GET", target)
    assert (e.value.status, e.value.code) == (404, "UNSUPPORTED")


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("POST", "/v2/"),
        ("DELETE", "/v2/"),
        ("POST", "/v2/_catalog"),
        ("DELETE", "/v2/_catalog"),
        ("PUT", "/v2/a/tags/list"),
        ("POST", "/v2/a/manifests/latest"),
        ("PATCH", "/v2/a/manifests/latest"),
        ("PUT", f"/v2/a/blobs/{DIGEST}"),
        ("POST", f"/v2/a/blobs/{DIGEST}"),
        ("GET", "/v2/a/blobs/uploads/"),
        ("PUT", "/v2/a/blobs/uploads/"),
        ("POST", UPLOAD),
        ("HEAD", UPLOAD),
        ("DELETE", f"/v2/a/referrers/{DIGEST}"),
        ("OPTIONS", "/v2/a/manifests/latest"),
        ("TRACE", "/v2/"),
    ],
)
def test_wrong_method_is_405(method, target):
    with pytest.raises(RouteError) as e:
        match_route(method, target)
    assert (e.value.status, e.value.code) == (405, "UNSUPPORTED")


def test_a_405_says_the_same_to_get_and_head():
    # A HEAD's Content-Length is the GET's (RFC 9110 §9.3.2): the message must not name the
    # method (it did: "method HEAD not allowed …" was one byte longer than the GET's).
    messages = set()
    for method in ("GET", "HEAD"):
        with pytest.raises(RouteError) as e:
            match_route(method, "/v2/a/blobs/uploads/")
        messages.add(e.value.message)
    assert messages == {"method not allowed on upload-start route (it takes POST)"}


def test_canonicality_is_checked_before_the_method():
    with pytest.raises(RouteError) as e:
        match_route("OPTIONS", "/v2/a%2Fb/manifests/latest")
    assert e.value.status == 400


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2", True),
        ("/v2/", True),
        ("/v2/a/tags/list", True),
        ("/v2x", False),
        ("/v20/", False),
        ("/", False),
        ("/metrics", False),
        ("/V2/", False),
    ],
)
def test_is_registry_path(path, expected):
    assert is_registry_path(path) is expected


def test_check_canonical_allows_the_uploads_trailing_slash():
    check_canonical("/v2/a/blobs/uploads/")


@pytest.mark.parametrize(
    "query",
    ["&".join(f"k{i}=v" for i in range(65)), "from=%ff", "from=%c3%28"],
)
def test_unreadable_queries_are_refused(query):
    with pytest.raises(RouteError) as e:
        match_route("POST", f"/v2/a/blobs/uploads/?{query}")
    assert (e.value.status, e.value.code) == (400, "UNSUPPORTED")


def test_plus_in_from_is_a_space_like_in_go():
    with pytest.raises(RouteError) as e:
        match_route("POST", "/v2/a/blobs/uploads/?from=b+c")
    assert e.value.code == "NAME_INVALID"
    route = match_route("POST", "/v2/a/blobs/uploads/?from=b%2Fc")
    assert route.required_strings == ["repository:a:pull,push", "repository:b/c:pull"]


def test_parse_query_keeps_blank_values_and_repeats():
    assert parse_query("a=1&a=2&b=&c") == {"a": ["1", "2"], "b": [""], "c": [""]}
    assert parse_query("") == {}


def test_parse_query_decodes_percent_escapes_once():
    assert parse_query("from=a%2Fb") == {"from": ["a/b"]}
