"""Tests run once per Keras backend: set KERAS_BACKEND before pytest (see .ci/run)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    keras.backend.clear_session()
    yield


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"
