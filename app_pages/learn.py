"""Learn: the LoRA idea in formulas, a toy to play with, a calculator for real models, lessons."""

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from app_pages.common import exercise_link, style, tr
from core.classroom import budget, lessons, links

st.title(tr("learn.title"))
st.markdown(tr("learn.intro"))

tab_idea, tab_toy, tab_calc, tab_lessons = st.tabs(
    [tr("learn.tab_idea"), tr("learn.tab_toy"), tr("learn.tab_calc"), tr("learn.tab_lessons")]
)

with tab_idea:
    st.subheader(tr("learn.idea.forward_title"))
    st.latex(r"h = W_0\,x + \frac{\alpha}{r}\,B\,A\,x")
    st.latex(
        r"W_0 \in \mathbb{R}^{d\times k}\ \text{(" + tr("learn.idea.frozen") + r")},\quad "
        r"B \in \mathbb{R}^{d\times r},\quad A \in \mathbb{R}^{r\times k},\quad "
        r"r \ll \min(d, k)"
    )
    st.markdown(tr("learn.idea.forward"))
    st.latex(
        r"\underbrace{r\,(d+k)}_{\text{LoRA}} \quad\text{" + tr("learn.idea.versus") + r"}\quad "
        r"\underbrace{d\,k}_{\text{" + tr("learn.idea.full") + "}}"
    )

    st.subheader(tr("learn.idea.zero_title"))
    st.latex(r"B_0 = 0 \;\Rightarrow\; \Delta W_0 = \tfrac{\alpha}{r} B_0 A_0 = 0")
    st.markdown(tr("learn.idea.zero"))

    st.subheader(tr("learn.idea.scaling_title"))
    st.latex(
        r"s_{\text{LoRA}} = \frac{\alpha}{r} \qquad\qquad "
        r"s_{\text{rsLoRA}} = \frac{\alpha}{\sqrt{r}}"
    )
    st.markdown(tr("learn.idea.scaling"))

    st.subheader(tr("learn.idea.merge_title"))
    st.latex(r"W = W_0 + \frac{\alpha}{r} B A \quad\Rightarrow\quad h = W x")
    st.markdown(tr("learn.idea.merge"))

with tab_toy:
    st.markdown(tr("learn.toy.intro"))
    col_d, col_k, col_r = st.columns(3)
    d = col_d.slider("d", 2, 16, 8, key="learn.d", help=tr("learn.toy.d_help"))
    k = col_k.slider("k", 2, 16, 12, key="learn.k", help=tr("learn.toy.k_help"))
    rank = col_r.slider("r", 1, 8, 2, key="learn.r", help=tr("learn.toy.r_help"))
    # a row of its own: in a quarter of the width its label was cut off in presenter mode
    trained = st.toggle(tr("learn.toy.trained"), value=True, key="learn.trained")
    example = budget.toy(d, k, rank, alpha=rank, trained=trained)

    names = ["W₀ (d×k)", "B (d×r)", "A (r×k)", "ΔW = (α/r)·B·A"]
    matrices = [example.W0, example.B, example.A, example.delta_W]
    fig = make_subplots(rows=1, cols=4, column_widths=[k, rank, k, k], horizontal_spacing=0.04)
    for col, (name, matrix) in enumerate(zip(names, matrices, strict=True), start=1):
        fig.add_trace(
            go.Heatmap(z=matrix, colorscale="RdBu_r", zmid=0, showscale=False), row=1, col=col
        )
        # square cells, so that B looks thin and A looks flat; the name right under each
        fig.update_yaxes(
            scaleanchor="x" if col == 1 else f"x{col}", constrain="domain", row=1, col=col
        )
        fig.update_xaxes(constrain="domain", title_text=name, row=1, col=col)
    fig.update_yaxes(autorange="reversed", showticklabels=False, showgrid=False, ticks="")
    fig.update_xaxes(showticklabels=False, showgrid=False, ticks="")
    st.plotly_chart(style(fig, height=240), width="stretch", config={"displayModeBar": False})

    m1, m2, m3, m4 = st.columns(4)
    m1.metric(tr("learn.toy.rank"), example.rank_delta_W, help=tr("learn.toy.rank_help"))
    m2.metric(tr("learn.toy.lora_params"), example.lora_params)  # the formulas: caption below
    m3.metric(tr("learn.toy.full_params"), example.full_params)
    m4.metric(tr("learn.toy.ratio"), f"{example.lora_params / example.full_params:.0%}")
    counts = {"d": d, "k": k, "r": rank, "lora": example.lora_params, "full": example.full_params}
    st.caption(tr("learn.toy.counts", **counts))
    if rank > example.rank_cap:
        st.warning(tr("learn.toy.over_cap", r=rank, cap=example.rank_cap))
    elif not example.saves:
        st.warning(tr("learn.toy.no_saving", r=rank, even=f"{example.break_even:.1f}"))
    st.caption(tr("learn.toy.trained_note" if trained else "learn.toy.init_note"))

with tab_calc:
    st.markdown(tr("learn.calc.intro"))
    col_model, col_targets, col_rank, col_dtype = st.columns([2, 3, 2, 2])
    model = budget.MODELS[col_model.selectbox(tr("learn.calc.model"), budget.MODELS, key="calc.m")]
    targets = col_targets.multiselect(
        tr("learn.calc.targets"),
        list(model.matrices),
        default=list(model.default_targets),
        key=f"calc.targets.{model.name}",
    )
    calc_rank = col_rank.select_slider(
        tr("learn.calc.rank"), [1, 2, 4, 8, 16, 32, 64, 128, 256], value=4, key="calc.r"
    )
    dtype = col_dtype.selectbox(
        tr("learn.calc.dtype"), list(budget.BYTES_PER_VALUE), index=1, key="calc.dtype"
    )
    if not targets:
        st.info(tr("learn.calc.no_targets"))
    else:
        cost = budget.budget(model, targets, calc_rank, dtype)
        c1, c2, c3 = st.columns(3)
        c1.metric(tr("learn.calc.trainable"), budget.human_count(cost.trainable_params))
        c2.metric(tr("learn.calc.fraction"), f"{cost.fraction:.4%}")
        c3.metric(tr("learn.calc.disk"), budget.human_bytes(cost.adapter_bytes))
        c4, c5, c6 = st.columns(3)
        c4.metric(tr("learn.calc.frozen"), budget.human_bytes(cost.frozen_bytes))
        c5.metric(
            tr("learn.calc.full_memory"),
            budget.human_bytes(cost.full_training_bytes),
            help=tr("learn.calc.memory_help"),
        )
        c6.metric(
            tr("learn.calc.memory"),
            budget.human_bytes(cost.lora_training_bytes),
            delta=f"-{budget.human_bytes(cost.saved_bytes)}",  # "-" makes it a saving: ↓ green
            delta_color="inverse",
            help=tr("learn.calc.memory_help"),
        )
        shapes = ", ".join(
            f"{name} {model.matrices[name][0]}×{model.matrices[name][1]}" for name in targets
        )
        st.caption(tr("learn.calc.formula", layers=model.layers, shapes=shapes, rank=calc_rank))
        ours = budget.paper_budget()
        st.caption(
            tr(
                "learn.calc.paper",
                paper_full=budget.human_bytes(budget.PAPER_FULL_BYTES),
                paper_lora=budget.human_bytes(budget.PAPER_LORA_BYTES),
                ours_full=budget.human_bytes(ours.full_training_bytes),
                ours_lora=budget.human_bytes(ours.lora_training_bytes),
            )
        )

with tab_lessons:
    st.markdown(tr("learn.lessons_intro"))
    for lesson in lessons.LESSONS:
        words = {part: tr(key) for part, key in lesson.text_keys().items()}
        with st.container(border=True):
            st.markdown(f"#### {words['title']}")
            st.markdown(words["goal"])
            st.markdown(f"**{tr('learn.look_for')}** {words['look_for']}")
            st.page_link(
                f"app_pages/{lesson.page}.py",
                label=tr("learn.open_lesson"),
                icon=":material/play_circle:",
                query_params=lesson.query(),
            )
            values = links.page_defaults(lesson.page) | lesson.settings
            exercise_link(
                lesson.page,
                values,
                f"learn.exercise.{lesson.id}",
                "exercise.lesson_intro",
                goal=lesson.exercise,
            )
