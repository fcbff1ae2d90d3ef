import pytest
import timm
import torch
from safetensors.torch import save_file

from ser.models.backbones import PretrainedWeightsUnavailable, build_backbone


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_local_imagenet_style_checkpoint_loads_into_one_channel_model(tmp_path, fmt):
    # Stand-in for an ImageNet checkpoint: a 3-channel, 1000-class timm model written by the test.
    source = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    state = source.state_dict()
    path = tmp_path / f"resnet18.{fmt}"
    save_file(state, str(path)) if fmt == "safetensors" else torch.save(state, path)
    net = build_backbone("resnet18", num_classes=7, in_chans=1, weights=str(path))
    # timm sums the RGB stem filters for in_chans=1 and drops the mismatched classifier.
    assert torch.allclose(net.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(net.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert net.fc.out_features == 7
    assert net(torch.randn(2, 1, 64, 64)).shape == (2, 7)


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must not run",))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Payload()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        build_backbone("resnet18", num_classes=3, weights=str(path))


def test_offline_without_weights_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(PretrainedWeightsUnavailable, match="model.weights=") as err:
        build_backbone("resnet18", num_classes=4, pretrained=True)
    assert "HF_HUB_OFFLINE" in str(err.value) and "model.pretrained=false" in str(err.value)
    with pytest.raises(PretrainedWeightsUnavailable, match="does not exist"):
        build_backbone("resnet18", num_classes=4, weights=str(tmp_path / "missing.safetensors"))


def test_torchvision_checkpoint_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.hub.set_dir(str(tmp_path / "hub"))
    with pytest.raises(PretrainedWeightsUnavailable, match="hub/checkpoints"):
        build_backbone("resnet18", num_classes=4, weights="torchvision")
    import torchvision

    url = torchvision.models.get_model_weights("resnet18").DEFAULT.url
    target = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    target.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), target)  # torchvision key names
    net = build_backbone("resnet18", num_classes=4, weights="torchvision")
    assert net.fc.out_features == 4


def test_spectro_cnn_handles_any_length():
    net = build_backbone("spectro_cnn", num_classes=5, width=8, depth=3)
    assert net(torch.randn(3, 1, 128, 40)).shape == (3, 5)
    assert net(torch.randn(3, 1, 128, 200)).shape == (3, 5)


def test_mel_tdnn_and_deep_ensemble():
    net = build_backbone("mel_tdnn", num_classes=4, feat_dim=32, channels=16, layers=2)
    assert net(torch.randn(2, 1, 32, 50)).shape == (2, 4)
    ens = build_backbone("mel_tdnn", num_classes=4, feat_dim=32, channels=16, layers=2, ensemble=3)
    x = torch.randn(5, 1, 32, 50)
    members = [torch.softmax(z, -1) for z in ens.eval().member_logits(x)]
    assert len(members) == 3 and not torch.allclose(members[0], members[1])  # different initialisations
    assert torch.allclose(torch.softmax(ens(x), -1), torch.stack(members).mean(0), atol=1e-5)


def test_ensemble_members_train_on_their_own_losses():
    from ser.models.classifier import EmotionClassifier

    model = EmotionClassifier({"arch": "mel_tdnn", "feat_dim": 16, "channels": 8, "layers": 1, "ensemble": 2},
                              num_classes=3, emotions=["a", "b", "c"],
                              optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3})
    x, y = torch.randn(6, 1, 16, 20), torch.tensor([0, 1, 2, 0, 1, 2])
    loss = model.training_step((x, y), 0)
    loss.backward()
    assert all(p.grad is not None for p in model.net.members[1].parameters())
