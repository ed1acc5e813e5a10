"""How a file is shown on admin pages. Thumbnails (file list, file page, execution page, run
form): an <img> of the admin's thumbnail view when the worker has made it, a placeholder
otherwise; only the row's `thumbnails` record is looked at, no object-store request, no decode.
Metadata: the camera facts of files.metadata's JSON as labelled rows."""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse
from django.utils.html import format_html

from .models import File


def thumbnail_entry(file: File, *, size: int | None = None) -> tuple[int, dict] | None:
    """(size, record) of the derived object to show: the list thumbnail, or the preview (size None)."""
    size = size or settings.FILE_PREVIEW_SIZE
    wanted = settings.FILE_THUMBNAIL_SIZE if size <= settings.FILE_THUMBNAIL_SIZE else settings.FILE_PREVIEW_SIZE
    entry = (file.thumbnails or {}).get(str(wanted))
    return (wanted, entry) if isinstance(entry, dict) and entry.get("key") else None


def thumbnail_url(file: File, *, size: int | None = None) -> str | None:
    found = thumbnail_entry(file, size=size)
    if found is None:
        return None
    return reverse("admin:files_file_thumbnail", args=[file.pk, found[0]])


def thumbnail_html(file: File, *, size: int | None = 128) -> str:
    """`size` is the box the picture is shown in (CSS pixels; None: as large as the preview)."""
    box = size or settings.FILE_PREVIEW_SIZE
    name = file.original_name or str(file.pk)
    found = thumbnail_entry(file, size=size)
    if found is None:
        failed = bool((file.thumbnails or {}).get("error"))
        text = "no preview" if failed else "thumbnail pending"
        title = (file.thumbnails or {}).get("error") if failed else "A worker is making the thumbnail; reload later."
        return format_html(
            '<span class="if-thumb-placeholder" data-role="thumbnail-placeholder" title="{}" '
            'style="display:inline-flex;align-items:center;justify-content:center;width:{}px;height:{}px;'
            'background:var(--darkened-bg,#eee);color:var(--body-quiet-color,#666);font-size:11px;'
            'text-align:center;border-radius:4px">{}</span>', title, min(box, 256), min(box, 256) * 3 // 4, text)
    wanted, entry = found
    width, height = entry.get("width") or box, entry.get("height") or box
    scale = min(box / width, box / height, 1.0)
    # Lists load their thumbnails as they scroll into view; the file page's preview at once.
    return format_html('<img class="if-thumb" data-role="thumbnail" src="{}" alt="{}" width="{}" height="{}" '
                       'loading="{}" style="object-fit:contain;background:#f4f4f4;border-radius:4px">',
                       reverse("admin:files_file_thumbnail", args=[file.pk, wanted]), name,
                       max(1, round(width * scale)), max(1, round(height * scale)),
                       "lazy" if size else "eager")


def _join(*parts) -> str:
    return " · ".join(str(p) for p in parts if p not in (None, "", []))


def metadata_rows(metadata: dict | None) -> list[tuple[str, str]]:
    """(label, text) of what a person asks of a photo, in files.metadata's shape (docs/images.md);
    rows with nothing to say are left out. Everything else stays in the JSON below the table."""
    meta = metadata or {}
    camera, lens, exposure, gps = (meta.get(k) if isinstance(meta.get(k), dict) else {}
                                   for k in ("camera", "lens", "exposure", "gps"))
    rows: list[tuple[str, object]] = [
        ("Format", _join(meta.get("format"), meta.get("mode"))),
        ("Dimensions", f"{meta.get('oriented_width')} × {meta.get('oriented_height')} px as shown"
                       + (f" (stored {meta.get('width')} × {meta.get('height')})"
                          if (meta.get("width"), meta.get("height")) != (meta.get("oriented_width"),
                                                                           meta.get("oriented_height")) else "")
         if meta.get("oriented_width") else (f"{meta.get('width')} × {meta.get('height')} px" if meta.get("width") else "")),
        ("Orientation", meta.get("orientation")),
        ("Camera make", camera.get("make")),
        ("Camera model", camera.get("model")),
        ("Lens", _join(lens.get("make") if lens.get("make") != camera.get("make") else None, lens.get("model"))),
        ("Date taken", meta.get("taken_at")),
        ("Exposure", _join(f"{exposure['exposure_time']} s" if exposure.get("exposure_time") else None,
                           f"f/{exposure['f_number']}" if exposure.get("f_number") else None,
                           f"ISO {exposure['iso']}" if exposure.get("iso") else None,
                           f"{exposure['focal_length_mm']} mm" if exposure.get("focal_length_mm") else None,
                           f"({exposure['focal_length_35mm']} mm in 35 mm)" if exposure.get("focal_length_35mm") else None,
                           f"{exposure['exposure_bias_ev']:+} EV" if isinstance(exposure.get("exposure_bias_ev"), (int, float))
                           and exposure.get("exposure_bias_ev") else None,
                           ("flash fired" if exposure.get("flash_fired") else "no flash")
                           if "flash_fired" in exposure else None)),
        ("GPS", _join(f"{gps['latitude']:.6f}, {gps['longitude']:.6f}"
                      if isinstance(gps.get("latitude"), (int, float)) and isinstance(gps.get("longitude"), (int, float))
                      else None,
                      f"altitude {gps['altitude_m']} m" if gps.get("altitude_m") is not None else None,
                      f"direction {gps['direction_deg']}°" if gps.get("direction_deg") is not None else None,
                      gps.get("timestamp"))),
        ("Color profile", _join((meta.get("icc_profile") or {}).get("description"),
                                (meta.get("icc_profile") or {}).get("color_space"))
         if isinstance(meta.get("icc_profile"), dict) else ""),
        ("Frames", meta.get("frames") if (meta.get("frames") or 1) > 1 else None),
        ("Software", camera.get("software")),
    ]
    return [(label, str(value)) for label, value in rows if value not in (None, "")]
