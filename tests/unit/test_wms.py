"""Tests for s3maptiler.render.wms: GetMap URLs, image checks, error mapping and retries.

HTTP is mocked with `responses`; where it cannot model the behaviour (a read timeout
that really elapses, a refused connection, a body that arrives in pieces or breaks
off) a tiny http.server on 127.0.0.1 plays the WMS.
"""

from __future__ import annotations

import contextlib
import io
import random
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import responses
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from s3maptiler.render.answers import check_image
from s3maptiler.render.errors import WMSError, WMSTimeout, WMSUsageError
from s3maptiler.render.getmap import WMSSource, bbox_text, getmap_params, getmap_url
from s3maptiler.render.wms import WMSClient
from tests.leakcheck import MARKER

E = 20037508.342789244
WMS_URL = "http://127.0.0.1:9/cgi-bin/mapserv"


class Bbox(NamedTuple):  # the shape grids.Bbox has; any 4-sequence must do
    left: float
    bottom: float
    right: float
    top: float


TILE = Bbox(-E, 0.0, 0.0, E)


# --------------------------------------------------------------------------- helpers


def encode(fmt: str, size: tuple[int, int] = (256, 256), mode: str = "RGB", **kw) -> bytes:
    image = Image.new(mode, size, (30, 120, 200) if mode == "RGB" else 7)
    out = io.BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


def png(size: tuple[int, int] = (256, 256), mode: str = "RGB") -> bytes:
    return encode("PNG", size, mode)


def jpeg(size: tuple[int, int] = (256, 256), **kw) -> bytes:
    return encode("JPEG", size, **kw)


def noisy_png(size: tuple[int, int]) -> bytes:
    """A PNG that barely compresses: far larger than the prototype's 64 KiB buffer."""
    data = random.Random(42).randbytes(size[0] * size[1] * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", size, data).save(out, "PNG")
    return out.getvalue()


def source(**kw) -> WMSSource:
    kw.setdefault("url", WMS_URL)
    kw.setdefault("layers", "roads")
    return WMSSource(**kw)


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


@pytest.fixture
def client():
    """A client whose retry pauses are recorded instead of slept."""
    wms = WMSClient(retries=2, backoff=0.25, max_retry_after=5.0)
    wms.sleeps = []
    wms._sleep = wms.sleeps.append
    yield wms
    wms.close()


@pytest.fixture
def mock():
    with responses.RequestsMock() as rsps:
        yield rsps


SE_111 = b"""<?xml version='1.0' encoding="UTF-8" standalone="no" ?>
<!DOCTYPE ServiceExceptionReport SYSTEM
  "http://schemas.opengis.net/wms/1.1.1/exception_1_1_1.dtd">
<ServiceExceptionReport version="1.1.1">
<ServiceException code="LayerNotDefined">
msWMSLoadGetMapParams(): WMS server error.
   Invalid layer(s) given in the LAYERS parameter.
</ServiceException>
</ServiceExceptionReport>
"""

SE_130 = b"""<?xml version="1.0" encoding="UTF-8"?>
<ServiceExceptionReport version="1.3.0" xmlns="http://www.opengis.net/ogc"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.opengis.net/ogc
  http://schemas.opengis.net/wms/1.3.0/exceptions_1_3_0.xsd">
<ServiceException code="InvalidCRS">msWMSLoadGetMapParams(): WMS server error. Invalid CRS given : CRS must be valid for all requested layers.</ServiceException>
</ServiceExceptionReport>
"""  # noqa: E501

OWS_REPORT = b"""<?xml version="1.0"?>
<ows:ExceptionReport xmlns:ows="http://www.opengis.net/ows/1.1" version="2.0.0">
  <ows:Exception exceptionCode="MissingParameterValue" locator="STYLES">
    <ows:ExceptionText>Missing STYLES parameter</ows:ExceptionText>
  </ows:Exception>
</ows:ExceptionReport>
"""


# --------------------------------------------------------------------------- URL building


def test_getmap_params_111_in_order():
    assert getmap_params(source(), TILE, 256, 256) == [
        ("SERVICE", "WMS"),
        ("VERSION", "1.1.1"),
        ("REQUEST", "GetMap"),
        ("LAYERS", "roads"),
        ("STYLES", ""),
        ("SRS", "EPSG:3857"),
        ("BBOX", "-20037508.342789244,0,0,20037508.342789244"),
        ("WIDTH", "256"),
        ("HEIGHT", "256"),
        ("FORMAT", "image/png"),
        ("TRANSPARENT", "FALSE"),
        ("EXCEPTIONS", "application/vnd.ogc.se_xml"),
    ]


def test_getmap_params_130_uses_crs_xml_exceptions_bgcolor_and_extras():
    src = source(
        version="1.3.0",
        transparent=True,
        bgcolor="0x00FF00",
        extra_params=(("map_resolution", "96"), ("DPI", "96")),
    )
    params = getmap_params(src, TILE, 512, 256)
    keys = [k for k, _ in params]
    assert "SRS" not in keys
    assert ("CRS", "EPSG:3857") in params
    assert ("EXCEPTIONS", "XML") in params
    assert ("TRANSPARENT", "TRUE") in params
    assert ("BGCOLOR", "0x00FF00") in params
    assert (params[7], params[8]) == (("WIDTH", "512"), ("HEIGHT", "256"))
    assert params[-2:] == [("map_resolution", "96"), ("DPI", "96")]


@pytest.mark.parametrize("version", ["1.1.1", "1.3.0"])
def test_exceptions_never_inimage_or_blank(version):
    url = getmap_url(source(version=version), TILE, 256, 256).upper()
    assert "INIMAGE" not in url
    assert "BLANK" not in url


def test_styles_sent_even_when_empty():
    url = getmap_url(source(), TILE, 256, 256)
    assert "&STYLES=&" in url
    assert query_of(url)["STYLES"] == ""


def test_url_with_existing_query_is_appended_with_ampersand():
    url = getmap_url(source(url=WMS_URL + "?map=ROADS"), TILE, 256, 256)
    assert url.startswith(WMS_URL + "?map=ROADS&SERVICE=WMS&VERSION=1.1.1&REQUEST=GetMap&")
    assert url.count("?") == 1
    assert query_of(url)["map"] == "ROADS"


@pytest.mark.parametrize("suffix", ["", "?", "?map=ROADS&"])
def test_url_never_has_empty_or_doubled_separators(suffix):
    url = getmap_url(source(url=WMS_URL + suffix), TILE, 256, 256)
    assert "?&" not in url
    assert "&&" not in url
    assert url.count("?") == 1


def test_standard_keys_in_the_configured_url_are_replaced_by_ours():
    src = source(url=WMS_URL + "?map=X&service=wfs&Version=1.0.0&LAYERS=other", version="1.3.0")
    pairs = parse_qsl(urlsplit(getmap_url(src, TILE, 256, 256)).query, keep_blank_values=True)
    upper = [k.upper() for k, _ in pairs]
    assert upper.count("SERVICE") == upper.count("VERSION") == upper.count("LAYERS") == 1
    assert ("VERSION", "1.3.0") in pairs
    assert ("LAYERS", "roads") in pairs
    assert ("map", "X") in pairs


def test_format_with_parameters_survives_encoding():
    url = getmap_url(source(image_format="image/png; mode=8bit"), TILE, 256, 256)
    assert " " not in url
    assert query_of(url)["FORMAT"] == "image/png; mode=8bit"


@pytest.mark.parametrize(
    ("srs", "version", "expected"),
    [
        ("EPSG:4326", "1.1.1", "-180,-90,0,45.5"),
        ("EPSG:4326", "1.3.0", "-90,-180,45.5,0"),
        ("EPSG:4258", "1.3.0", "-90,-180,45.5,0"),
        ("EPSG:4269", "1.3.0", "-90,-180,45.5,0"),
        ("urn:ogc:def:crs:EPSG::4326", "1.3.0", "-90,-180,45.5,0"),
        ("CRS:84", "1.3.0", "-180,-90,0,45.5"),
        ("EPSG:3857", "1.3.0", "-180,-90,0,45.5"),
    ],
)
def test_axis_order_swaps_only_for_geographic_epsg_on_130(srs, version, expected):
    assert bbox_text((-180.0, -90.0, 0.0, 45.5), srs, version) == expected


def test_130_4326_swap_reaches_the_url():
    url = getmap_url(source(version="1.3.0", srs="EPSG:4326"), (-180, -90, 0, 90), 256, 256)
    assert query_of(url)["BBOX"] == "-90,-180,90,0"
    assert query_of(url)["CRS"] == "EPSG:4326"


def test_bbox_text_tiny_degrees_have_no_exponent():
    text = bbox_text((0.0, 0.0, 4.291534423828125e-05, 4.291534423828125e-05), "EPSG:4326", "1.1.1")
    assert "e" not in text.lower()
    assert text == "0,0,0.0000429153,0.0000429153"


def test_bbox_text_large_metres_are_exact_not_g_formatted():
    text = bbox_text((-E, -E, E, E), "EPSG:3857", "1.1.1")
    assert text == "-20037508.342789244,-20037508.342789244,20037508.342789244,20037508.342789244"


def test_bbox_text_never_negative_zero():
    assert bbox_text((-0.0, -0.0, 1.0, 1.0), "EPSG:3857", "1.1.1") == "0,0,1,1"
    # A tiny negative that rounds to zero must not print as "-0" either.
    assert bbox_text((-1e-12, -1e-13, 1.0, 1.0), "EPSG:4326", "1.1.1") == "0,0,1,1"
    assert "-0." not in bbox_text((-1e-12, 0.0, 1.0, 1.0), "EPSG:3857", "1.1.1")


_metres = st.floats(min_value=-E, max_value=E, allow_nan=False, allow_infinity=False)
_degrees = st.floats(min_value=-180.0, max_value=180.0, allow_nan=False, allow_infinity=False)


@given(a=_metres, b=_metres)
def test_bbox_text_metres_fixed_and_faithful(a, b):
    lo, hi = sorted((a, b))
    if lo == hi:
        hi = lo + 1.0
    parts = bbox_text((lo, lo, hi, hi), "EPSG:3857", "1.1.1").split(",")
    for text, value in zip(parts, (lo, lo, hi, hi), strict=True):
        assert "e" not in text.lower()
        assert float(text) != 0.0 or text == "0"
        assert abs(float(text) - value) <= 1e-8


@given(a=_degrees, b=_degrees)
def test_bbox_text_degrees_fixed_and_faithful(a, b):
    lo, hi = sorted((a, b))
    if lo == hi:
        hi = lo + 1e-3
    parts = bbox_text((lo, lo, hi, hi), "EPSG:4326", "1.1.1").split(",")
    for text, value in zip(parts, (lo, lo, hi, hi), strict=True):
        assert "e" not in text.lower()
        assert float(text) != 0.0 or text == "0"
        assert abs(float(text) - value) <= 1e-10


def test_bbox_accepts_any_four_sequence_and_rejects_nonsense():
    assert bbox_text([0, 0, 1, 1], "EPSG:3857", "1.1.1") == "0,0,1,1"
    for bad in [(0, 0, 1), (1, 0, 0, 1), (0, 1, 1, 0), (0, 0, float("nan"), 1), ("a", 0, 1, 1)]:
        with pytest.raises(WMSUsageError):
            bbox_text(bad, "EPSG:3857", "1.1.1")


@pytest.mark.parametrize("size", [(0, 256), (256, -1), (256.0, 256), (True, 256)])
def test_getmap_rejects_bad_sizes(size):
    with pytest.raises(WMSUsageError):
        getmap_params(source(), TILE, *size)


@pytest.mark.parametrize(
    "kw",
    [
        {"version": "1.2.0"},
        {"bgcolor": "white"},
        {"image_format": "png"},
        {"layers": "  "},
        {"url": "ftp://127.0.0.1/wms"},
        {"url": "mapserv?map=X"},
        {"extra_params": (("styles", "default"),)},
        {"extra_params": (("Bbox", "0,0,1,1"),)},
        {"extra_params": (("DPI", "96"), ("dpi", "72"))},
    ],
)
def test_invalid_source_fails_at_construction(kw):
    with pytest.raises(WMSUsageError) as info:
        source(**kw)
    assert isinstance(info.value, ValueError)
    assert "\n" not in info.value.reason


# --------------------------------------------------------------------------- check_image


def test_check_image_accepts_complete_images():
    check_image(png(), "image/png", 256, 256)
    check_image(png(mode="P"), "image/png; mode=8bit", 256, 256)
    check_image(png(mode="RGBA"), "image/png", 256, 256)
    check_image(jpeg(), "image/jpeg", 256, 256)
    check_image(jpeg(progressive=True), "image/jpeg", 256, 256)
    check_image(jpeg(), "image/vnd.jpeg-png", 256, 256)
    check_image(png(), "image/vnd.jpeg-png", 256, 256)
    check_image(encode("GIF", mode="P"), "image/gif", 256, 256)
    check_image(encode("TIFF"), "image/tiff", 256, 256)


def _kind(data: bytes, fmt: str, width: int = 256, height: int = 256) -> str:
    with pytest.raises(WMSError) as info:
        check_image(data, fmt, width, height)
    return info.value.kind


def test_check_image_every_truncation_of_a_png_is_rejected():
    data = png((8, 8))
    for cut in range(len(data)):
        assert _kind(data[:cut], "image/png", 8, 8) == "bad_image", cut


def test_check_image_every_truncation_of_a_jpeg_is_rejected():
    data = jpeg((16, 16))
    for cut in range(len(data)):
        assert _kind(data[:cut], "image/jpeg", 16, 16) == "bad_image", cut


def test_check_image_rejects_wrong_sizes_with_a_readable_reason():
    with pytest.raises(WMSError) as info:
        check_image(png((512, 512)), "image/png", 256, 256)
    assert info.value.kind == "bad_image"
    assert "512x512" in info.value.reason and "256x256" in info.value.reason
    assert _kind(jpeg((256, 255)), "image/jpeg") == "bad_image"
    assert _kind(encode("GIF", (128, 256), mode="P"), "image/gif") == "bad_image"


def test_check_image_rejects_the_wrong_family():
    assert _kind(jpeg(), "image/png") == "bad_image"
    assert _kind(png(), "image/jpeg") == "bad_image"
    assert _kind(b"<html>oops</html>", "image/png") == "bad_image"
    assert _kind(b"", "image/png") == "bad_image"


def test_check_image_rejects_a_corrupt_chunk_length():
    data = bytearray(png())
    data[33:37] = b"\xff\xff\xff\xf0"  # the chunk after IHDR claims ~4 GiB
    assert _kind(bytes(data), "image/png") == "bad_image"


# --------------------------------------------------------------------------- get_map (mocked)


def test_the_health_check_asks_for_capabilities_even_from_a_getmap_url(client, mock):
    """A WMS URL copied from a GetMap keeps its own parameters, not its REQUEST."""
    mock.get(WMS_URL, body="<WMT_MS_Capabilities/>", content_type="application/xml")
    url = WMS_URL + "?map=ROADS&REQUEST=GetMap&VERSION=1.3.0"
    client.check_capabilities(source(url=url, version="1.1.1"), timeout=3.0)
    sent = parse_qsl(urlsplit(mock.calls[0].request.url).query)
    assert [v for k, v in sent if k.upper() == "REQUEST"] == ["GetCapabilities"]
    assert [v for k, v in sent if k.upper() == "VERSION"] == ["1.1.1"]
    assert ("map", "ROADS") in sent


def test_get_map_returns_the_image_and_sends_the_getmap(client, mock):
    body = png()
    mock.get(WMS_URL, body=body, content_type="image/png")
    assert client.get_map(source(url=WMS_URL + "?map=ROADS"), TILE, 256, 256) == body
    assert client.requests_sent == 1
    sent = query_of(mock.calls[0].request.url)
    assert sent["map"] == "ROADS"
    assert sent["REQUEST"] == "GetMap"
    assert sent["BBOX"] == "-20037508.342789244,0,0,20037508.342789244"


def test_get_map_accepts_content_type_parameters(client, mock):
    body = png(mode="P")
    mock.get(WMS_URL, body=body, content_type="image/png; mode=8bit")
    assert client.get_map(source(image_format="image/png; mode=8bit"), TILE, 256, 256) == body


@pytest.mark.parametrize(
    ("status", "content_type", "body", "expected"),
    [
        (
            200,
            "application/vnd.ogc.se_xml; charset=UTF-8",
            SE_111,
            "LayerNotDefined: msWMSLoadGetMapParams(): WMS server error. "
            "Invalid layer(s) given in the LAYERS parameter.",
        ),
        (
            200,
            "text/xml; charset=UTF-8",
            SE_130,
            "InvalidCRS: msWMSLoadGetMapParams(): WMS server error. "
            "Invalid CRS given : CRS must be valid for all requested layers.",
        ),
        (400, "text/xml", SE_130, "InvalidCRS: msWMSLoadGetMapParams()"),
        (400, "application/xml", OWS_REPORT, "MissingParameterValue: Missing STYLES parameter"),
        (500, "text/xml", SE_111, "LayerNotDefined: msWMSLoadGetMapParams()"),
    ],
)
def test_exception_reports_become_502_with_the_wms_text(
    client, mock, status, content_type, body, expected
):
    mock.get(WMS_URL, body=body, status=status, content_type=content_type)
    with pytest.raises(WMSError) as info:
        client.get_map(source(), TILE, 256, 256)
    error = info.value
    assert (error.status, error.kind) == (502, "exception_report")
    assert error.reason.startswith(expected)
    assert "\n" not in error.reason
    assert len(mock.calls) == 1  # never retried, not even on 500


def test_exception_report_with_an_image_content_type_is_still_reported(client, mock):
    mock.get(WMS_URL, body=SE_111, content_type="image/png")
    with pytest.raises(WMSError) as info:
        client.get_map(source(), TILE, 256, 256)
    assert info.value.kind == "exception_report"


def test_long_multiline_exception_text_becomes_one_short_line(client, mock):
    text = "\n".join(f"line {i} of a very chatty stack trace" for i in range(100))
    body = (
        f'<ServiceExceptionReport><ServiceException code="X">{text}</ServiceException>'
        "</ServiceExceptionReport>"
    )
    mock.get(WMS_URL, body=body.encode(), content_type="text/xml")
    with pytest.raises(WMSError) as info:
        client.get_map(source(), TILE, 256, 256)
    assert "\n" not in info.value.reason
    assert len(info.value.reason) <= 300
    assert info.value.reason.startswith("X: line 0 of a very chatty stack trace line 1")


def test_reason_never_contains_the_wms_url(client, mock):
    secret_url = WMS_URL + "?map=/srv/secret/roads.map&token=" + MARKER
    echo = f"<ServiceExceptionReport><ServiceException>Cannot fetch {secret_url}&SERVICE=WMS from 127.0.0.1:9</ServiceException></ServiceExceptionReport>"  # noqa: E501
    mock.get(WMS_URL, body=echo.encode(), content_type="text/xml")
    with pytest.raises(WMSError) as info:
        client.get_map(source(url=secret_url), TILE, 256, 256)
    assert MARKER not in info.value.reason
    assert "127.0.0.1:9" not in info.value.reason
    assert info.value.reason.startswith("Cannot fetch")


def test_html_error_page_with_200_gives_its_title(client, mock):
    page = b"<!DOCTYPE html><html><head><title>Proxy Error</title></head><body><h1>The proxy server received an invalid response</h1></body></html>"  # noqa: E501
    mock.get(WMS_URL, body=page, content_type="text/html; charset=utf-8")
    with pytest.raises(WMSError) as info:
        client.get_map(source(), TILE, 256, 256)
    assert (info.value.status, info.value.kind, info.value.reason) == (
        502,
        "not_image",
        "Proxy Error",
    )


def test_html_without_title_gives_its_first_text(client, mock):
    page = b"<html><body><script>var x=1;</script><p>Service  temporarily\nunavailable</p></body>"
    mock.get(WMS_URL, body=page, content_type="text/html")
    with pytest.raises(WMSError) as info:
        client.get_map(source(), TILE, 256, 256)
    assert info.value.reason == "Service temporarily unavailable"


def test_other_non_image_answers_name_their_content_type(client, mock):
    mock.get(WMS_URL, body=b'{"error": 1}', content_type="application/json")
    with pytest.raises(WMSError) as info:
        client.get_map(source(), TILE, 256, 256)
    assert info.value.kind == "not_image"
    assert info.value.reason == "WMS answered application/json instead of an image"


def test_html_404_is_not_retried_and_gives_its_title(client, mock):
    page = b"<html><head><title>404 Not Found</title></head><body>nope</body></html>"
    mock.get(WMS_URL, body=page, status=404, content_type="text/html")
    with pytest.raises(WMSError) as info:
        client.get_map(source(), TILE, 256, 256)
    error = info.value
    assert (error.status, error.kind, error.upstream_status) == (502, "http_status", 404)
    assert error.reason == "404 Not Found"
    assert len(mock.calls) == 1 and client.sleeps == []


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (png()[:-200], "image/png"),  # truncated
        (png((512, 512)), "image/png"),  # wrong size
        (jpeg(), "image/png"),  # JPEG where PNG was asked
        (png(), "image/jpeg"),  # and the reverse
    ],
)
def test_bad_images_become_502_bad_image(client, mock, data, fmt):
    mock.get(WMS_URL, body=data, content_type=fmt)
    with pytest.raises(WMSError) as info:
        client.get_map(source(image_format=fmt), TILE, 256, 256)
    assert (info.value.status, info.value.kind) == (502, "bad_image")
    assert len(mock.calls) == 1


def test_500_then_200_succeeds_after_exactly_two_requests(client, mock):
    body = png()
    mock.get(WMS_URL, status=500, body=b"boom", content_type="text/plain")
    mock.get(WMS_URL, body=body, content_type="image/png")
    assert client.get_map(source(), TILE, 256, 256) == body
    assert len(mock.calls) == 2
    assert client.requests_sent == 2
    assert len(client.sleeps) == 1


def test_500_forever_gives_502_after_one_plus_retries_requests(client, mock):
    mock.get(WMS_URL, status=500, body=b"", content_type="text/plain")
    with pytest.raises(WMSError) as info:
        client.get_map(source(), TILE, 256, 256)
    error = info.value
    assert (error.status, error.kind) == (502, "http_status")
    assert error.reason == "HTTP 500 Internal Server Error"
    assert len(mock.calls) == 3 == client.requests_sent
    # Exponential backoff with a little jitter: 0.25 s then 0.5 s (each at most +25 %).
    assert len(client.sleeps) == 2
    assert 0.25 <= client.sleeps[0] <= 0.3125
    assert 0.5 <= client.sleeps[1] <= 0.625


@pytest.mark.parametrize(("retry_after", "expected_pause"), [("2", 2.0), ("3600", 5.0)])
def test_503_retry_after_is_honoured_up_to_the_cap(client, mock, retry_after, expected_pause):
    body = png()
    mock.get(WMS_URL, status=503, headers={"Retry-After": retry_after}, body=b"busy")
    mock.get(WMS_URL, body=body, content_type="image/png")
    assert client.get_map(source(), TILE, 256, 256) == body
    assert client.sleeps == [expected_pause]
    assert len(mock.calls) == 2


@pytest.mark.parametrize("status", [400, 404, 429])  # 401, 403: test_sources.py
def test_4xx_is_never_retried(client, mock, status):
    mock.get(WMS_URL, status=status, body=b"", content_type="text/plain")
    with pytest.raises(WMSError) as info:
        client.get_map(source(), TILE, 256, 256)
    assert info.value.kind == "http_status"
    assert info.value.reason.startswith(f"HTTP {status}")
    assert len(mock.calls) == 1


def test_read_timeout_is_not_retried(client, mock):
    mock.get(WMS_URL, body=requests.exceptions.ReadTimeout("slow"))
    with pytest.raises(WMSTimeout) as info:
        client.get_map(source(), TILE, 256, 256)
    assert (info.value.status, info.value.kind) == (504, "timeout")
    assert len(mock.calls) == 1 and client.sleeps == []


def test_connect_timeout_is_a_retried_connection_error(client, mock):
    mock.get(WMS_URL, body=requests.exceptions.ConnectTimeout("no route"))
    with pytest.raises(WMSError) as info:
        client.get_map(source(), TILE, 256, 256)
    assert (info.value.status, info.value.kind) == (502, "connection")
    assert len(mock.calls) == 3


def test_body_over_the_limit_is_refused(mock):
    wms = WMSClient(max_body_bytes=10_000)
    mock.get(WMS_URL, body=noisy_png((100, 100)), content_type="image/png")
    with pytest.raises(WMSError) as info:
        wms.get_map(source(), TILE, 100, 100)
    assert info.value.kind == "bad_image"
    wms.close()


def test_concurrent_calls_share_one_client(client, mock):
    body = png()
    mock.get(WMS_URL, body=body, content_type="image/png")
    results: list[bytes] = []

    def work():
        for _ in range(5):
            results.append(client.get_map(source(), TILE, 256, 256))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 40 and all(r == body for r in results)
    assert client.requests_sent == 40


# --------------------------------------------------------------------------- get_map (real server)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        with self.server.lock:
            self.server.hits += 1
            hit = self.server.hits
        # OSError: the client gave up (timeout tests), there is nobody left to answer.
        with contextlib.suppress(OSError):
            self.server.behaviour(self, hit)

    def log_message(self, *args):
        pass


def _send_head(handler, status: int, content_type: str, length: int) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(length))
    handler.end_headers()


@pytest.fixture
def wms_server():
    """A WMS stand-in on 127.0.0.1; set ``server.behaviour(handler, hit_number)``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.lock = threading.Lock()
    server.hits = 0
    server.release = threading.Event()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/cgi-bin/mapserv"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_is_retried_then_502(client):
    port = _closed_port()
    with pytest.raises(WMSError) as info:
        client.get_map(source(url=f"http://127.0.0.1:{port}/wms"), TILE, 256, 256)
    error = info.value
    assert (error.status, error.kind) == (502, "connection")
    assert "refused" in error.reason
    assert str(port) not in error.reason
    assert client.requests_sent == 3
    assert len(client.sleeps) == 2


def test_read_timeout_gives_504_after_exactly_one_request(wms_server):
    def slow(handler, hit):
        wms_server.release.wait(5)
        body = png()
        _send_head(handler, 200, "image/png", len(body))
        handler.wfile.write(body)

    wms_server.behaviour = slow
    wms = WMSClient(read_timeout=0.3, retries=2)
    with pytest.raises(WMSTimeout) as info:
        wms.get_map(source(url=wms_server.url), TILE, 256, 256)
    assert (info.value.status, info.value.kind) == (504, "timeout")
    assert wms.requests_sent == 1
    assert wms_server.hits == 1
    wms.close()


def test_stall_in_the_middle_of_the_body_is_a_timeout_too(wms_server):
    body = noisy_png((64, 64))

    def stall(handler, hit):
        _send_head(handler, 200, "image/png", len(body))
        handler.wfile.write(body[: len(body) // 2])
        wms_server.release.wait(5)

    wms_server.behaviour = stall
    wms = WMSClient(read_timeout=0.3, retries=2)
    with pytest.raises(WMSTimeout):
        wms.get_map(source(url=wms_server.url), TILE, 64, 64)
    assert wms_server.hits == 1
    wms.close()


def test_large_image_arriving_in_pieces_is_read_completely(wms_server):
    body = noisy_png((300, 300))
    assert len(body) > 4 * 65536

    def trickle(handler, hit):
        _send_head(handler, 200, "image/png", len(body))
        for start in range(0, len(body), 4096):
            handler.wfile.write(body[start : start + 4096])
            handler.wfile.flush()

    wms_server.behaviour = trickle
    with WMSClient() as wms:
        assert wms.get_map(source(url=wms_server.url), TILE, 300, 300) == body


def test_connection_dropped_mid_body_is_retried_never_returned(client, wms_server):
    body = png()

    def drop_first(handler, hit):
        _send_head(handler, 200, "image/png", len(body))
        handler.wfile.write(body if hit > 1 else body[: len(body) // 2])

    wms_server.behaviour = drop_first
    assert client.get_map(source(url=wms_server.url), TILE, 256, 256) == body
    assert wms_server.hits == 2


def test_connection_closed_without_answer_is_retried(client, wms_server):
    body = png()

    def hang_up_first(handler, hit):
        if hit > 1:
            _send_head(handler, 200, "image/png", len(body))
            handler.wfile.write(body)

    wms_server.behaviour = hang_up_first
    assert client.get_map(source(url=wms_server.url), TILE, 256, 256) == body
    assert wms_server.hits == 2


def test_unresolvable_host_is_a_connection_error(client, mock):
    mock.get(WMS_URL, body=requests.exceptions.ConnectionError(socket.gaierror(-2, "nope")))
    with pytest.raises(WMSError) as info:
        client.get_map(source(), TILE, 256, 256)
    assert info.value.kind == "connection"
    assert info.value.reason == "WMS connection failed: the WMS host name could not be resolved"


def test_no_hidden_retries_below_ours(client, wms_server):
    def fail(handler, hit):
        _send_head(handler, 502, "text/plain", 3)
        handler.wfile.write(b"bad")

    wms_server.behaviour = fail
    with pytest.raises(WMSError) as info:
        client.get_map(source(url=wms_server.url), TILE, 256, 256)
    assert info.value.reason == "HTTP 502 Bad Gateway: bad"
    assert wms_server.hits == 3 == client.requests_sent
