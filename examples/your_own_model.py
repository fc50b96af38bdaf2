import pytorch_lightning as pl
import torch
from torch.utils.data import TensorDataset, random_split

from mohaq.convert import make_quantizable, model_workload
from mohaq.search import MetricEvaluator, SearchSettings, run_search


class Spotter(pl.LightningModule):  # your model: its nn.GRU, nn.LSTM and nn.Linear get converted
    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.out = torch.nn.GRU(10, 32, batch_first=True), torch.nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(x)[1][-1])  # the word, from the last hidden state

    def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01)


words = torch.randint(4, (320,), generator=torch.Generator().manual_seed(0))
clips = torch.randn(320, 20, 10) + torch.nn.functional.one_hot(words, 10)[:, None]  # 20 frames
splits = random_split(TensorDataset(clips, words), [192, 64, 64])  # train, validation, test
data = pl.LightningDataModule.from_datasets(*splits, batch_size=16)
pl.Trainer(max_epochs=5, logger=False, enable_checkpointing=False).fit(model := Spotter(), data)
make_quantizable(model, granularity="operator")  # quantizable GRU and Linear, points per operator
accuracy = "torchmetrics.classification.MulticlassAccuracy"  # the search minimizes 1 - accuracy
evaluator = MetricEvaluator(model, data, metric=accuracy, metric_args={"num_classes": 4})
settings = SearchSettings(platform="size", objectives=["error", "memory_mb"], budget=20)
print(run_search(settings, workload=model_workload(model), evaluator=evaluator).front)
