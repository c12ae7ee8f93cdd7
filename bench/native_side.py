"""The native PyTorch contenders: a plain training loop, written as a PyTorch user would
write it (imported only inside a worker; no keras, no TensorFlow).

Per step: numpy batch -> torch (NHWC viewed as NCHW; contiguous NCHW or channels_last),
forward under optional bf16 autocast, label-smoothed cross-entropy, the config's optimizer
(`adamw`: AdamW with kerasvit's decay exclusions; `nesterov_sgd`: torch.optim.SGD nesterov
with airbench's per-parameter groups, no lookahead; fused kernels) and schedule (warmup-cosine
or triangular), training accuracy, `loss.item()` (the sync). Evaluation: eval mode,
inference_mode, forward, logits to numpy.
"""

import time

import torch
import torch.nn.functional as F

from bench import native_models

# bench/keras_side.py compiles the Keras contenders with steps_per_epoch=1000: the same here.
STEPS_PER_EPOCH = 1000


def pick_device(setting):
    if setting == "cpu":
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class NativeContender:
    def __init__(self, spec, contender, batches, device):
        self.contender = contender
        self.device = device
        self.x = batches["x"]
        self.labels = batches["labels"]
        self.index = 0
        self.eval_index = 0
        self.bf16 = contender["precision"] == "bf16"
        self.memory_format = (torch.channels_last if contender.get("channels_last")
                              else torch.contiguous_format)
        config = spec["config"]
        self.label_smoothing = config["label_smoothing"]

        torch.manual_seed(0)
        if spec["model"] == "vit_b16":
            module = native_models.HFLogits(native_models.build_hf_vit(spec["arch"]))
        else:
            module = native_models.build_native(
                spec["model"], fused_attention=contender.get("fused_attention", True),
                **config["model_args"])
        module = module.to(device)
        if contender.get("channels_last"):
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        # The config's optimizer and schedule, sized as the Keras contenders' compile_model
        # (1000 steps per epoch).
        self.optimizer, self.scheduler, self.optimizer_name = native_models.make_optimizer(
            module, config, steps_per_epoch=STEPS_PER_EPOCH)
        self.forward = torch.compile(module) if contender.get("compile") else module
        self.correct = torch.zeros((), dtype=torch.int64, device=device)

    def info(self):
        trainable, frozen = native_models.param_counts(self.module)
        info = {"params": {"trainable": trainable, "non_trainable": frozen,
                           "total": trainable + frozen},
                "optimizer": self.optimizer_name,
                "device": str(self.device)}
        if self.contender.get("framework") == "transformers":
            info["attn_implementation"] = getattr(self.module.model.config,
                                                  "_attn_implementation", None)
        return info

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def batch(self, index):
        k = index % len(self.x)
        images = torch.from_numpy(self.x[k]).to(self.device, non_blocking=True)
        images = images.permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format)
        labels = torch.from_numpy(self.labels[k]).to(self.device, non_blocking=True)
        return images, labels

    def step(self):
        images, labels = self.batch(self.index)
        self.index += 1
        with self.autocast():
            logits = self.forward(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.correct += (logits.detach().argmax(1) == labels).sum()
        return loss.item()  # the device sync

    def train(self, steps):
        self.module.train()
        times = []
        last = time.perf_counter()
        for _ in range(steps):
            self.step()
            now = time.perf_counter()
            times.append(now - last)
            last = now
        return times

    def evaluate(self, steps):
        self.module.eval()
        times = []
        try:
            for _ in range(steps):
                start = time.perf_counter()
                images, _ = self.batch(self.eval_index)
                self.eval_index += 1
                with torch.inference_mode(), self.autocast():
                    logits = self.forward(images)
                logits.float().cpu().numpy()
                times.append(time.perf_counter() - start)
        finally:
            self.module.train()
        return times


def thread_info():
    return {"torch_num_threads": torch.get_num_threads(),
            "torch_num_interop_threads": torch.get_num_interop_threads(),
            "mkldnn": bool(torch.backends.mkldnn.is_available()),
            "torch_cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability",
                                            lambda: None)()}
