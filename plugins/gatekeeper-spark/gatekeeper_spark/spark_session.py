"""The SparkSession gatekeeper uses: the one a job already has, or one it starts.

Under ``spark-submit`` or on Databricks a session exists and its configuration (master,
executors, Delta's JARs) is the user's: gatekeeper takes it as it is. Started from a plain
``gatekeeper`` command, the master comes from ``GATEKEEPER_SPARK_MASTER`` (default
``local[*,4]``: every core, and a failed task is tried up to four times, as a cluster does;
plain ``local[N]`` never retries a task). ``spark.sql.session.timeZone`` is set to UTC so
signal times mean the same instant on every executor.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import TYPE_CHECKING, Any

from gatekeeper import PluginError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

PLUGIN = "spark"
DEFAULT_MASTER = "local[*,4]"
MASTER_ENV = "GATEKEEPER_SPARK_MASTER"


def java_available() -> bool:
    """Whether a Java runtime is reachable the way pyspark looks for one."""
    home = os.environ.get("JAVA_HOME")
    if home and os.path.isfile(os.path.join(home, "bin", "java")):
        return True
    return shutil.which("java") is not None


def import_pyspark() -> Any:
    try:
        import pyspark
    except ImportError:
        raise PluginError(PLUGIN, "the Spark engine needs pyspark: pip install 'gatekeeper[spark]' "
                          "(or pip install gatekeeper-spark)") from None
    return pyspark


def get_spark(
    master: str | None = None, app_name: str = "gatekeeper", conf: dict[str, str] | None = None
) -> SparkSession:
    """The active SparkSession, or a new one (with ``conf`` added). Raises PluginError (exit 5)
    naming what is missing."""
    import_pyspark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if not java_available():
        raise PluginError(PLUGIN, "Java is missing: Spark needs a Java 17 runtime on PATH or in JAVA_HOME "
                          "(Debian: apt-get install openjdk-17-jre-headless)")
    # Python workers must run this interpreter: another one lacks pyarrow and gatekeeper.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (SparkSession.builder.appName(app_name)
               .master(master or os.environ.get(MASTER_ENV) or DEFAULT_MASTER)
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "8"))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # the JVM failed to start: say why in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PluginError(PLUGIN, f"Spark could not start: {first}") from None
    spark.sparkContext.setLogLevel(os.environ.get("GATEKEEPER_SPARK_LOG_LEVEL", "ERROR"))
    return spark
