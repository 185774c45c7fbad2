"""Trains and exports the ONNX models that the engine's tests serve.

Every model is made by the real converter a user would run (skl2onnx,
onnxmltools, onnx.helper), with its defaults. Beside each `NAME.onnx` goes
`NAME.json`: the rows to send, what the library itself predicts on them
(`predict`, `predict_proba`) and what onnxruntime answers, output by output.

    python3 tests/onnx/make_models.py OUT_DIR
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.cluster import KMeans
from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import Binarizer, LabelEncoder, MinMaxScaler, OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

RNG = np.random.RandomState(0)


def to_list(value):
    """onnxruntime's outputs as JSON: arrays as nested lists, ZipMap as a list of dicts."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OUS":
            return [str(v) for v in value.ravel()] if value.ndim else str(value)
        return value.tolist()
    if isinstance(value, list):
        return [{str(k): float(v) for k, v in row.items()} for row in value]
    return value


def save(out, name, onx, rows, native=None, dtype=np.float32):
    path = out / f"{name}.onnx"
    path.write_bytes(onx.SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed_name = session.get_inputs()[0].name
    x = np.asarray(rows, dtype=dtype)
    results = session.run(None, {feed_name: x})
    if dtype is object:
        x = x.astype(str)
    record = {
        # JSON has no NaN: a missing value is sent as null.
        "rows": [[None if v != v else v for v in row] if isinstance(row, list) else row for row in x.tolist()],
        "ort": {o.name: to_list(r) for o, r in zip(session.get_outputs(), results)},
        "native": native or {},
    }
    (out / f"{name}.json").write_text(json.dumps(record))


def classifier(out, name, model, x, y, rows, **options):
    model.fit(x, y)
    native = {
        "label": [v.item() if hasattr(v, "item") else v for v in model.predict(rows)],
        "probabilities": model.predict_proba(rows).tolist(),
    }
    save(out, name, to_onnx(model, x[:1].astype(np.float32)), rows, native)
    save(
        out,
        name + "_nozipmap",
        to_onnx(model, x[:1].astype(np.float32), options={"zipmap": False}),
        rows,
        native,
    )


def regressor(out, name, model, x, y, rows):
    model.fit(x, y)
    native = {"variable": np.asarray(model.predict(rows)).tolist()}
    save(out, name, to_onnx(model, x[:1].astype(np.float32)), rows, native)


def sklearn_models(out):
    # The SageMaker blog's model: y = 2x + 1.
    x = np.arange(0, 10, 0.5, dtype=np.float32).reshape(-1, 1)
    y = 2 * x.ravel() + 1
    regressor(out, "linear_regression", LinearRegression(), x, y, [[0.5], [1.0]])

    xr, yr = make_regression(n_samples=300, n_features=6, noise=0.3, random_state=0)
    xr = xr.astype(np.float32)
    rows_r = xr[:16]
    _, y2 = make_regression(n_samples=300, n_features=6, n_targets=2, random_state=1)
    regressor(out, "ridge", Ridge(alpha=0.5), xr, yr, rows_r)
    regressor(out, "decision_tree_regressor", DecisionTreeRegressor(max_depth=6, random_state=0), xr, yr, rows_r)
    regressor(out, "random_forest_regressor", RandomForestRegressor(n_estimators=100, max_depth=8, random_state=0), xr, yr, rows_r)
    regressor(out, "extra_trees_regressor", ExtraTreesRegressor(n_estimators=30, max_depth=8, random_state=0), xr, yr, rows_r)
    regressor(out, "gradient_boosting_regressor", GradientBoostingRegressor(n_estimators=50, random_state=0), xr, yr, rows_r)
    regressor(out, "hist_gradient_boosting_regressor", HistGradientBoostingRegressor(max_iter=30, random_state=0), xr, yr, rows_r)
    regressor(out, "random_forest_multi_target", RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0), xr, y2, rows_r)
    regressor(out, "decision_tree_multi_target", DecisionTreeRegressor(max_depth=6, random_state=0), xr, y2, rows_r)
    regressor(out, "mlp_regressor", MLPRegressor(hidden_layer_sizes=(32, 16), max_iter=300, random_state=0), xr, yr, rows_r)
    regressor(out, "minmax_ridge_pipeline", make_pipeline(MinMaxScaler(), Ridge()), xr, yr, rows_r)

    iris = load_iris()
    xi, yi = iris.data.astype(np.float32), iris.target
    rows_i = xi[::10]
    xb, yb = make_classification(n_samples=400, n_features=8, n_informative=5, random_state=0)
    xb = xb.astype(np.float32)
    rows_b = xb[:16]
    for prefix, xc, yc, rows in [("binary", xb, yb, rows_b), ("multiclass", xi, yi, rows_i)]:
        classifier(out, f"logistic_{prefix}", LogisticRegression(max_iter=500), xc, yc, rows)
        classifier(out, f"decision_tree_{prefix}", DecisionTreeClassifier(max_depth=5, random_state=0), xc, yc, rows)
        classifier(out, f"random_forest_{prefix}", RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0), xc, yc, rows)
        classifier(out, f"extra_trees_{prefix}", ExtraTreesClassifier(n_estimators=30, max_depth=8, random_state=0), xc, yc, rows)
        classifier(out, f"gradient_boosting_{prefix}", GradientBoostingClassifier(n_estimators=30, random_state=0), xc, yc, rows)
        classifier(out, f"hist_gradient_boosting_{prefix}", HistGradientBoostingClassifier(max_iter=20, random_state=0), xc, yc, rows)
        classifier(out, f"mlp_{prefix}", MLPClassifier(hidden_layer_sizes=(16,), max_iter=500, random_state=0), xc, yc, rows)
        classifier(out, f"scaled_logistic_{prefix}", make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), xc, yc, rows)
    names = np.array(iris.target_names)[yi]
    classifier(out, "string_labels", RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0), xi, names, rows_i)
    classifier(out, "string_labels_logistic", LogisticRegression(max_iter=500), xi, names, rows_i)

    preprocessing(out, xr, yr, xb, yb)

    kmeans = KMeans(n_clusters=3, n_init=3, random_state=0).fit(xi)
    native = {"label": kmeans.predict(rows_i).tolist()}
    save(out, "kmeans", to_onnx(kmeans, xi[:1]), rows_i, native)


def preprocessing(out, xr, yr, xb, yb):
    """Pipelines whose first step exports as Imputer, Binarizer or
    OneHotEncoder, and a LabelEncoder on strings."""
    holes = xr.copy()
    holes[::7, 2] = np.nan
    rows = holes[:16]
    regressor(out, "imputer_ridge_pipeline", make_pipeline(SimpleImputer(), Ridge()), holes, yr, rows)
    binarized = make_pipeline(Binarizer(threshold=0.1), LogisticRegression(max_iter=500)).fit(xb, yb)
    native = {"label": binarized.predict(xb[:16]).tolist(), "probabilities": binarized.predict_proba(xb[:16]).tolist()}
    save(out, "binarizer_logistic_pipeline", to_onnx(binarized, xb[:1]), xb[:16], native)

    categories = RNG.randint(0, 4, size=(200, 3)).astype(np.int64)
    target = ((categories[:, 0] == 1) | (categories[:, 2] == 3)).astype(np.int64)
    encoded = make_pipeline(OneHotEncoder(), LogisticRegression(max_iter=500)).fit(categories, target)
    native = {"label": encoded.predict(categories[:16]).tolist(), "probabilities": encoded.predict_proba(categories[:16]).tolist()}
    save(out, "onehot_logistic_pipeline", to_onnx(encoded, categories[:1]), categories[:16], native, dtype=np.int64)

    words = np.array(["cat", "dog", "bird", "fish"])
    labels = LabelEncoder().fit(words)
    sample = np.array(["dog", "bird", "cat", "fish", "dog"])
    native = {"variable": labels.transform(sample).tolist()}
    from skl2onnx.common.data_types import StringTensorType

    onx = to_onnx(labels, initial_types=[("input", StringTensorType([None]))])
    save(out, "label_encoder", onx, sample, native, dtype=object)


def boosters(out):
    import lightgbm
    import xgboost
    from onnxmltools import convert_lightgbm, convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    xb, yb = make_classification(n_samples=400, n_features=8, n_informative=5, random_state=0)
    xm, ym = make_classification(n_samples=400, n_features=8, n_informative=5, n_classes=3, random_state=0)
    xr, yr = make_regression(n_samples=300, n_features=8, noise=0.3, random_state=0)
    xb, xm, xr = (a.astype(np.float32) for a in (xb, xm, xr))
    types = [("input", FloatTensorType([None, 8]))]
    for name, model, x, y in [
        ("xgboost_binary", xgboost.XGBClassifier(n_estimators=100, max_depth=4), xb, yb),
        ("xgboost_multiclass", xgboost.XGBClassifier(n_estimators=30, max_depth=4), xm, ym),
        ("lightgbm_binary", lightgbm.LGBMClassifier(n_estimators=50, verbose=-1), xb, yb),
        ("lightgbm_multiclass", lightgbm.LGBMClassifier(n_estimators=30, verbose=-1), xm, ym),
    ]:
        model.fit(x, y)
        rows = x[:16]
        native = {"label": model.predict(rows).tolist(), "probabilities": model.predict_proba(rows).tolist()}
        convert = convert_xgboost if name.startswith("xgboost") else convert_lightgbm
        save(out, name, convert(model, initial_types=types, target_opset=15), rows, native)
        if name.startswith("lightgbm"):
            save(out, name + "_nozipmap", convert(model, initial_types=types, zipmap=False, target_opset=15), rows, native)
    for name, model in [
        ("xgboost_regressor", xgboost.XGBRegressor(n_estimators=100, max_depth=4)),
        ("lightgbm_regressor", lightgbm.LGBMRegressor(n_estimators=50, verbose=-1)),
    ]:
        model.fit(xr, yr)
        rows = xr[:16]
        native = {"variable": model.predict(rows).tolist()}
        convert = convert_xgboost if name.startswith("xgboost") else convert_lightgbm
        save(out, name, convert(model, initial_types=types, target_opset=15), rows, native)


def aggregates(out):
    """Hand-made tree ensembles for what the converters above never write:
    AVERAGE, MIN and MAX aggregation, every branch mode, and missing values
    that follow the true branch."""
    modes = ["BRANCH_GTE", "LEAF", "BRANCH_LT", "LEAF", "LEAF", "BRANCH_EQ", "LEAF", "BRANCH_NEQ", "LEAF", "LEAF"]
    for aggregate in ["SUM", "AVERAGE", "MIN", "MAX"]:
        node = helper.make_node(
            "TreeEnsembleRegressor", ["X"], ["variable"], domain="ai.onnx.ml", n_targets=2,
            aggregate_function=aggregate, base_values=[0.5, -0.5],
            nodes_treeids=[0] * 5 + [1] * 5, nodes_nodeids=[0, 1, 2, 3, 4] * 2,
            nodes_featureids=[0, 0, 1, 0, 0, 2, 0, 0, 0, 0],
            nodes_values=[0.3, 0, -0.2, 0, 0, 1.0, 0, 2.0, 0, 0],
            nodes_modes=modes,
            nodes_truenodeids=[1, 0, 3, 0, 0, 1, 0, 3, 0, 0],
            nodes_falsenodeids=[2, 0, 4, 0, 0, 2, 0, 4, 0, 0],
            nodes_missing_value_tracks_true=[1, 0, 0, 0, 0, 0, 0, 1, 0, 0],
            target_treeids=[0, 0, 0, 0, 1, 1, 1, 1], target_nodeids=[1, 3, 4, 4, 1, 3, 4, 4],
            target_ids=[0, 1, 0, 1, 0, 1, 1, 0], target_weights=[1.0, 2.0, -3.0, 4.0, 5.0, -6.0, 7.0, 8.0],
        )
        graph = helper.make_graph(
            [node], f"trees_{aggregate.lower()}",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])],
            [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 2])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
        model.ir_version = 8
        rows = RNG.randn(32, 3).astype(np.float32)
        rows[::5, 2] = 1.0
        rows[::7, 0] = np.nan
        save(out, f"trees_{aggregate.lower()}", model, rows)


def convnet():
    """A small image classifier as PyTorch's exporter writes one: NCHW input, Conv, Relu, MaxPool, Gemm, Softmax."""
    w1 = RNG.randn(4, 1, 3, 3).astype(np.float32) * 0.5
    b1 = RNG.randn(4).astype(np.float32) * 0.1
    w2 = RNG.randn(3, 4 * 4 * 4).astype(np.float32) * 0.2
    b2 = RNG.randn(3).astype(np.float32) * 0.1
    init = [
        helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.ravel())
        for n, a in [("conv.weight", w1), ("conv.bias", b1), ("fc.weight", w2), ("fc.bias", b2)]
    ]
    init.append(helper.make_tensor("flat_shape", TensorProto.INT64, [2], [0, -1]))
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="/conv/Conv"),
        helper.make_node("Relu", ["c"], ["r"], name="/relu/Relu"),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="/pool/MaxPool"),
        helper.make_node("Reshape", ["p", "flat_shape"], ["f"], name="/Reshape"),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["g"], transB=1, name="/fc/Gemm"),
        helper.make_node("Softmax", ["g"], ["output"], axis=1, name="/Softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 1, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch_size", 3])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def hostile(out):
    """Graphs an attacker would upload, in OUT/hostile: each must fail to load
    with a clear error and cost the server nothing else."""
    out.mkdir(exist_ok=True)
    good = (out.parent / "linear_regression.onnx").read_bytes()
    (out / "truncated.onnx").write_bytes(good[: len(good) // 2])
    (out / "garbage.onnx").write_bytes(b"\xff" * 4096)

    def graph(name, nodes, inputs, outputs, initializers=(), opset=17):
        model = helper.make_model(
            helper.make_graph(nodes, name, inputs, outputs, list(initializers)),
            opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml", 1)],
        )
        model.ir_version = 8
        (out / f"{name}.onnx").write_bytes(model.SerializeToString())

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    graph("unknown_operator", [helper.make_node("Frobnicate", ["x"], ["y"], name="frob")], [x], [y])
    graph(
        "cycle",
        [helper.make_node("Add", ["x", "b"], ["a"], name="add"), helper.make_node("Relu", ["a"], ["b"], name="relu")],
        [x],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 2])],
    )
    # An initializer that claims 10^10 floats but carries four.
    lying = helper.make_tensor("w", TensorProto.FLOAT, [100000, 100000], [1.0, 2.0, 3.0, 4.0])
    graph("huge_initializer", [helper.make_node("Add", ["x", "w"], ["y"], name="add")], [x], [y], [lying])
    # A constant that asks for 4 TB when the graph is optimised.
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1000000, 1000000])
    graph(
        "huge_shape",
        [helper.make_node("ConstantOfShape", ["shape"], ["big"], name="big"), helper.make_node("Add", ["x", "big"], ["y"], name="add")],
        [x],
        [y],
        [shape],
    )
    # A tree whose branch points back at its root: evaluating it would never end.
    def tree(name, true_ids, class_ids):
        node = helper.make_node(
            "TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml", name="trees", n_targets=1,
            nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0],
            nodes_values=[0.5, 0.0, 0.0], nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"],
            nodes_truenodeids=true_ids, nodes_falsenodeids=[2, 0, 0],
            target_treeids=[0, 0], target_nodeids=[1, 2], target_ids=class_ids, target_weights=[1.0, 2.0],
        )
        graph(name, [node], [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])])
    tree("tree_cycle", [0, 0, 0], [0, 0])
    tree("tree_bad_target", [1, 0, 0], [0, 7])


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    sklearn_models(out)
    boosters(out)
    images = RNG.rand(4, 1, 8, 8).astype(np.float32)
    save(out, "convnet", convnet(), images)
    aggregates(out)
    hostile(out / "hostile")


if __name__ == "__main__":
    main()
