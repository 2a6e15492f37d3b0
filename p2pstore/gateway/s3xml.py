"""S3's XML: the documents the gateway answers with, and the few it reads.

Strategy: answers are built as element trees from plain values (no I/O); request bodies are
parsed only after a size cap and with document type declarations refused, so entity expansion
(the "billion laughs") cannot happen whatever the XML library would allow.  Namespaces are
ignored when reading: clients send S3's namespace or none.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from p2pstore.gateway.s3errors import S3Error

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_XML_BYTES = 2 * 1024 * 1024
"""The largest request document read (a CompleteMultipartUpload of 10,000 parts fits)."""

Tree = tuple[str, "str | int | bool | Sequence[Tree] | None"]
"""(tag, text or children): the shape answers are described in before rendering."""


def iso8601(seconds: float) -> str:
    """S3's timestamps in XML: ``2026-12-05T18:00:00.000Z``."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def http_date(seconds: float) -> str:
    """``Last-Modified``'s form: ``Sat, 05 Dec 2026 18:00:00 GMT``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def _build(parent: ET.Element, tree: Tree) -> None:
    tag, value = tree
    element = ET.SubElement(parent, tag)
    if isinstance(value, bool):
        element.text = "true" if value else "false"
    elif isinstance(value, str | int):
        element.text = str(value)
    elif value is not None:
        for child in value:
            _build(element, child)


def render(root: str, children: Iterable[Tree] | str) -> bytes:
    """An XML document with S3's namespace on its root element (``children`` may be its
    text)."""
    element = ET.Element(root, xmlns=NAMESPACE)
    if isinstance(children, str):
        element.text = children or None
    else:
        for child in children:
            _build(element, child)
    return _document(element)


def error_document(error: S3Error, request_id: str) -> bytes:
    element = ET.Element("Error")
    for tag, text in (
        ("Code", error.code),
        ("Message", error.message),
        ("Resource", error.resource),
        ("RequestId", request_id),
    ):
        ET.SubElement(element, tag).text = text
    return _document(element)


XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def _document(element: ET.Element) -> bytes:
    text: bytes = ET.tostring(element, encoding="utf-8", xml_declaration=False)
    return XML_DECLARATION + text


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse(body: bytes, root: str) -> ET.Element:
    """The request document whose root element is ``root``; ``MalformedXML`` otherwise."""
    if len(body) > MAX_XML_BYTES:
        raise S3Error("MalformedXML", f"the XML document is over {MAX_XML_BYTES} bytes")
    if b"<!" in body:
        raise S3Error("MalformedXML", "document type declarations are not accepted")
    try:
        element = ET.fromstring(body)  # noqa: S314 - no DTD can reach here (checked above)
    except ET.ParseError as exc:
        raise S3Error("MalformedXML", f"the XML you provided was not well-formed: {exc}") from None
    for node in element.iter():
        node.tag = _local(node.tag)
    if element.tag != root:
        raise S3Error("MalformedXML", f"expected a <{root}> document, got <{element.tag}>")
    return element


def _text(element: ET.Element, tag: str) -> str | None:
    child = element.find(tag)
    return None if child is None or child.text is None else child.text.strip()


@dataclass(frozen=True, slots=True)
class CompletedPart:
    number: int
    etag: str


def parse_complete_multipart(body: bytes) -> list[CompletedPart]:
    """The parts a CompleteMultipartUpload names, in the order given."""
    parts = []
    for node in parse(body, "CompleteMultipartUpload").findall("Part"):
        number, etag = _text(node, "PartNumber"), _text(node, "ETag")
        if number is None or etag is None or not number.isdigit():
            raise S3Error("MalformedXML", "each <Part> needs a <PartNumber> and an <ETag>")
        parts.append(CompletedPart(int(number), etag))
    if not parts:
        raise S3Error("MalformedXML", "a CompleteMultipartUpload names at least one part")
    return parts


@dataclass(frozen=True, slots=True)
class ObjectToDelete:
    key: str
    version_id: str | None


def parse_delete(body: bytes) -> tuple[list[ObjectToDelete], bool]:
    """The objects a DeleteObjects names (at most 1000), and whether it is quiet."""
    root = parse(body, "Delete")
    objects = []
    for node in root.findall("Object"):
        key = _text(node, "Key")
        if not key:
            raise S3Error("MalformedXML", "each <Object> needs a <Key>")
        objects.append(ObjectToDelete(key, _text(node, "VersionId")))
    if not 1 <= len(objects) <= 1000:
        raise S3Error("MalformedXML", "a DeleteObjects names from 1 to 1000 objects")
    return objects, (_text(root, "Quiet") or "false").lower() == "true"


def parse_versioning(body: bytes) -> str:
    """``Enabled`` or ``Suspended`` from a PutBucketVersioning."""
    status = _text(parse(body, "VersioningConfiguration"), "Status")
    if status not in ("Enabled", "Suspended"):
        raise S3Error("MalformedXML", "<Status> must be Enabled or Suspended")
    return status
