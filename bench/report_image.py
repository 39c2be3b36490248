"""REPORT.md rows of bench/image_size.py: the container image's size and its largest packages."""

from __future__ import annotations

from typing import Any

Row = tuple[str, str, str, str, str]  # figure, measured, target, verdict, bench


def rows(benches: dict[str, Any]) -> list[Row]:
    figures = (benches.get("image_size") or {}).get("figures") or {}
    if not figures.get("total_mb"):
        return []
    largest = ", ".join(f"{name} {mb:.0f}" for name, mb in figures.get("largest_packages_mb", []))
    return [
        (
            "container image, uncompressed layers",
            f"{figures['total_mb']:.0f} MB: {figures.get('base')} base {figures.get('base_mb', 0):.0f} MB + "
            f"batchctl and its dependencies {figures.get('added_mb', 0):.0f} MB",
            "",
            "",
            "image_size",
        ),
        ("  largest installed packages (MB)", largest, "", "", "image_size"),
    ]
