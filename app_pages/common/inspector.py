"""The Compare page's "Inspect an adapter": any model's LoRA file (a PEFT zip, a kohya /
diffusers .safetensors) uploaded and read without its model: per block the σ of each layer,
effective rank and σ1/σ2 across depth, the resize preview, and every layer's numbers."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages.common.session import failed, refused, said, tr
from app_pages.figures.inspect_figures import (
    HEATMAPS,
    depth_heatmap,
    resize_figure,
    spectra_figure,
)
from core.common.limits import SERVER, Limits
from core.lowrank import inspection
from core.training import adapters

KEY = "compare.inspect"
REPORTS_KEPT = 4  # reports cached per server: one per file being looked at


@st.cache_data(show_spinner=False, max_entries=REPORTS_KEPT)
def _report(file_id: str, name: str, max_bytes: int, _data: bytes) -> inspection.AdapterInspection:
    """The report of an uploaded file, once per upload (its id: the bytes are not hashed)."""
    with adapters.uploaded_adapter(_data, name, max_bytes) as adapter:
        return inspection.inspect_adapter(adapter, name)


def inspect_section() -> None:
    """The upload, within the server's limit (LORA_LAB_MAX_UPLOAD_MB), and its report."""
    with st.expander(tr("inspect.title"), icon=":material/biotech:"):
        st.caption(tr("inspect.intro"))
        try:
            limit = Limits.from_env(SERVER).max_upload_mb
        except ValueError as error:  # the server's own setting: its teacher reads this
            st.error(refused(error))
            return
        upload = st.file_uploader(
            tr("inspect.file"),
            type=["zip", "safetensors"],
            key=f"{KEY}.upload",
            max_upload_size=limit,
        )
        st.caption(tr("inspect.limit", mb=limit))
        if upload is None:
            return
        try:
            with st.spinner(tr("inspect.reading")):
                report = _report(upload.file_id, upload.name, limit * 2**20, upload.getvalue())
        except ValueError as error:
            said(st.error, tr("inspect.failed"), str(error), "error")
            return
        except OSError as error:
            failed(error)
            return
        inspect_view(report)


def inspect_view(report: inspection.AdapterInspection) -> None:
    """What the report says, figure by figure (also drawn by tests/pages/test_inspect_view.py)."""
    st.text(report.source)  # the file's own name: text, never Markdown
    effective = sum(layer.effective_rank for layer in report.layers)
    columns = st.columns(4)
    columns[0].metric(tr("inspect.layers"), len(report.layers))
    columns[1].metric(tr("inspect.total_rank"), report.total_rank)
    columns[2].metric(tr("inspect.effective_total"), f"{effective:.0f}")
    columns[3].metric(tr("inspect.size"), f"{report.bytes / 2**20:.1f} MiB")
    if report.dora:
        st.caption(tr("inspect.dora"))
    st.caption(tr("inspect.own_models"))

    st.subheader(tr("inspect.depth_title"))
    for field in HEATMAPS:
        st.plotly_chart(depth_heatmap(report, field), width="stretch", key=f"{KEY}.{field}")
    st.caption(tr("inspect.depth_caption"))

    st.subheader(tr("inspect.spectra_title"))
    positions = report.positions()
    position = st.selectbox(
        tr("inspect.block"),
        positions,
        format_func=lambda p: f"{positions.index(p)}: {p or tr('inspect.whole')}",
        key=f"{KEY}.block",
    )
    st.plotly_chart(spectra_figure(report, position), width="stretch", key=f"{KEY}.spectra")
    st.caption(tr("inspect.spectra_caption"))

    st.subheader(tr("inspect.resize_title"))
    curve, criteria = inspection.resize_preview(report), inspection.criterion_points(report)
    st.plotly_chart(resize_figure(curve, criteria), width="stretch", key=f"{KEY}.resize")
    st.caption(tr("inspect.resize_caption"))

    st.subheader(tr("inspect.table_title"))
    st.dataframe(layer_table(report), hide_index=True, width="stretch")


def layer_table(report: inspection.AdapterInspection) -> pd.DataFrame:
    """Every layer's numbers, one row each (names as data: a table shows them as text)."""
    return pd.DataFrame(
        [
            {
                tr("inspect.col_layer"): layer.name,
                tr("inspect.col_shape"): "×".join(map(str, layer.shape)),
                tr("inspect.col_rank"): layer.rank,
                tr("inspect.col_scaling"): layer.scaling,
                "‖ΔW‖_F": layer.frobenius,
                "σ1": layer.sigma[0],
                "σ1/σ2": layer.spike,
                tr("inspect.effective_rank"): layer.effective_rank,
                tr("inspect.col_stable"): layer.stable_rank,
                **{tr("inspect.col_kept", criterion=c): k for c, k in layer.kept.items()},
            }
            for layer in report.layers
        ]
    )
