"""README: the project's README.md, shown inside the app so it works offline."""

from pathlib import Path

import streamlit as st

README = Path(__file__).parent.parent / "README.md"

if README.exists():
    st.markdown(README.read_text(encoding="utf-8"))
