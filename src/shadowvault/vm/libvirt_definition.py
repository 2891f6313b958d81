"""A libvirt domain's XML, rewritten for its restored disks: what `virsh define NAME.xml` takes.

Each `<disk>` whose `<source file=...>` is a restored image now names the restored file, its
`<driver type=...>` the restored format, and loses its `<backingStore>` (a restored image is
whole). The runtime attributes of a live domain (`id`) go; the rest is the domain as it was.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET


def domain_xml(xml: str, disks: dict[str, tuple[str, str]]) -> str:
    """`disks`: original image path -> (restored path, restored format)."""
    domain = ET.fromstring(xml)
    domain.attrib.pop("id", None)
    for disk in domain.iter("disk"):
        source = disk.find("source")
        if source is None or source.get("file") not in disks:
            continue
        path, fmt = disks[source.get("file", "")]
        source.set("file", path)
        driver = disk.find("driver")
        if driver is not None:
            driver.set("type", fmt)
        for backing in disk.findall("backingStore"):
            disk.remove(backing)
    return ET.tostring(domain, encoding="unicode") + "\n"
