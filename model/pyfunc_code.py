"""The code file training logs as the churnguard pyfunc (MLflow "models from code").

MLflow copies this file into the model version and runs it when ``mlflow.pyfunc.load_model``
loads the version, instead of unpickling a ``python_model.pkl``: a registered churnguard
model holds no pickle at all (README, "Training and the model registry").
"""

from mlflow.models import set_model

from churnguard.model.pyfunc import ChurnguardPyfunc

set_model(ChurnguardPyfunc())
