"""The escalation triggers' detectors, in every shipped language: requests for a person (and
what is not one), repeated questions (paraphrases count, other questions do not), sentiment
(negation and intensity), and the model's cannot_help count."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from voxpipe.config.locale_texts import SHIPPED_LANGUAGES, LocaleTexts
from voxpipe.processors.policy.sentiment import SentimentDetector, sentiment_score
from voxpipe.processors.policy.triggers import (
    ConfidenceCounter,
    RepeatDetector,
    Request,
    RequestDetector,
)

TRIGGER_KEYS = (
    "escalation.person_words",
    "escalation.request_patterns",
    "escalation.bot_questions",
    "escalation.request_negations",
    "escalation.not_person",
    "escalation.contractions",
    "escalation.filler_words",
    "escalation.resolved_phrases",
)


@pytest.mark.parametrize("language", SHIPPED_LANGUAGES)
def test_every_language_ships_its_own_trigger_data(language: str) -> None:
    shipped = json.loads(
        resources.files("voxpipe.config.texts").joinpath(f"{language}.json").read_text("utf-8")
    )
    for key in TRIGGER_KEYS:
        assert shipped.get(key), f"{language}: {key} missing (it would fall back to English)"
    if language != "en":  # English uses VADER's own lexicon and rules
        for key in ("sentiment.negations", "sentiment.boosters", "sentiment.contrast"):
            assert shipped.get(key), f"{language}: {key} missing"
        lexicon = resources.files("voxpipe.config.sentiment").joinpath(f"{language}.txt")
        assert len(lexicon.read_text("utf-8").splitlines()) >= 40


# ------------------------------------------------------------------------- caller request

# language -> (requests, not requests: questions about the bot, refusals, mentions, ambiguous)
REQUESTS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "en": (
        [
            "I want to talk to a real person.",
            "Can I speak to someone?",
            "Get me a human now",
            "Operator!",
            "Representative, please.",
            "Transfer me please",
            "No, I want a person.",
            "Is there someone I can talk to?",
            "Are you a bot? Let me talk to your manager.",
        ],
        [
            "Am I talking to a human?",
            "Are you a real person?",
            "The bill is for someone else.",
            "I don't want to talk to a human.",
            "I do not need an agent, just tell me my balance",
            "Where is my order?",
        ],
        ["I booked through my travel agent last week", "My agent number is 5"],
    ),
    "fr": (
        [
            "Je voudrais parler à un conseiller, s'il vous plaît",
            "Passez-moi un conseiller",
            "Je veux une vraie personne",
            "Un conseiller, s'il vous plaît !",
            "J'ai besoin d'un conseiller",
            "Non, je veux parler à quelqu'un.",
        ],
        [
            "Est-ce que je parle à un humain ?",
            "Vous êtes un robot ?",
            "La facture est pour quelqu'un d'autre.",
            "Je ne veux pas parler à un humain.",
            "Où est ma commande ?",
        ],
        ["Mon conseiller bancaire m'a dit de vous appeler"],
    ),
    "de": (
        [
            "Kann ich mit einem Mitarbeiter sprechen?",
            "Verbinden Sie mich bitte mit einem Berater",
            "Ich will einen echten Menschen",
            "Mitarbeiter, bitte!",
            "Nein, ich möchte mit jemandem sprechen.",
        ],
        [
            "Spreche ich mit einem Menschen?",
            "Sind Sie ein Roboter?",
            "Die Rechnung ist für jemand anderen.",
            "Ich möchte nicht mit einem Menschen sprechen.",
            "Wo ist meine Bestellung?",
        ],
        ["Ihr Mitarbeiter war gestern sehr freundlich"],
    ),
    "es": (
        [
            "Quiero hablar con una persona",
            "Páseme con un asesor",
            "No, quiero hablar con un agente.",
            "Necesito un agente",
            "¿Hay alguien con quien pueda hablar?",
        ],
        [
            "¿Estoy hablando con un humano?",
            "¿Eres un robot?",
            "La factura es para otra persona.",
            "No quiero hablar con una persona.",
            "¿Dónde está mi pedido?",
        ],
        ["Mi asesor financiero me dijo que llamara"],
    ),
    "it": (
        [
            "Vorrei parlare con un operatore",
            "Mi passi un operatore",
            "Voglio una persona vera",
            "No, voglio parlare con qualcuno.",
        ],
        [
            "Sto parlando con un umano?",
            "Parlo con un umano?",
            "Sei un robot?",
            "La bolletta è per un'altra persona.",
            "Non voglio parlare con un operatore.",
            "Dov'è il mio ordine?",
        ],
        ["Il vostro operatore di ieri è stato gentile"],
    ),
    "pt": (
        [
            "Quero falar com um atendente",
            "Me transfira para um atendente",
            "Preciso de um atendente",
            "Atendente, por favor!",
            "Não, quero falar com alguém.",
        ],
        [
            "Estou falando com um humano?",
            "Você é um robô?",
            "A conta é para outra pessoa.",
            "Não quero falar com um atendente.",
            "Cadê meu pedido?",
        ],
        ["O atendente de ontem foi muito gentil"],
    ),
}


@pytest.mark.parametrize("language", SHIPPED_LANGUAGES)
def test_requests_for_a_person_are_told_from_questions_refusals_and_mentions(
    language: str,
) -> None:
    detector = RequestDetector(LocaleTexts.for_locale(language))
    requests, not_requests, ambiguous = REQUESTS[language]
    for text in requests:
        assert detector.classify(text) is Request.REQUEST, text
    for text in not_requests:
        assert detector.classify(text) is Request.NONE, text
    for text in ambiguous:  # named, not asked for: the model confirms (escalate_to_human)
        assert detector.classify(text) is Request.AMBIGUOUS, text


# --------------------------------------------------------------------------------- loop

# language -> (three paraphrases of one question, a different question with shared words)
REPEATS: dict[str, tuple[list[str], str]] = {
    "en": (
        ["What's my balance?", "um what is my balance please", "so what is my balance then"],
        "What is the weather like today?",
    ),
    "fr": (
        ["Où est ma commande ?", "Euh, où se trouve ma commande ?", "Mais où est ma commande ?"],
        "Comment changer mon mot de passe ?",
    ),
    "de": (
        [
            "Wo ist meine Bestellung?",
            "Äh, wo befindet sich meine Bestellung?",
            "Also wo ist denn meine Bestellung?",
        ],
        "Wie setze ich mein Passwort zurück?",
    ),
    "es": (
        [
            "¿Dónde está mi pedido?",
            "Eh, ¿dónde se encuentra mi pedido?",
            "Bueno, ¿dónde está mi pedido entonces?",
        ],
        "¿Cómo cambio mi contraseña?",
    ),
    "it": (
        [
            "Dov'è il mio ordine?",
            "Allora, dove si trova il mio ordine?",
            "Ehm, dove è il mio ordine?",
        ],
        "Come cambio la password?",
    ),
    "pt": (
        ["Cadê meu pedido?", "Onde está o meu pedido?", "Olha, onde tá meu pedido?"],
        "Como mudo minha senha?",
    ),
}


@pytest.mark.parametrize("language", SHIPPED_LANGUAGES)
def test_paraphrases_of_an_unresolved_question_count_as_repeats(language: str) -> None:
    texts = LocaleTexts.for_locale(language)
    paraphrases, other = REPEATS[language]
    detector = RepeatDetector(texts)
    counts = []
    for i, text in enumerate(paraphrases):
        counts.append(detector.observe(text))
        if i == 0:
            assert detector.observe(other) == 1  # a different question starts its own count
    assert counts == [1, 2, 3]
    # Once the caller says they have their answer, asking again starts over.
    detector = RepeatDetector(texts)
    detector.observe(paraphrases[0])
    detector.observe(paraphrases[1])
    assert detector.observe(texts.phrases("escalation.resolved_phrases")[0]) == 0
    assert detector.observe(paraphrases[2]) == 1


def test_contractions_and_similar_questions() -> None:
    detector = RepeatDetector(LocaleTexts.for_locale("en"))
    assert detector.key("What's my balance?") == detector.key("what is my balance")
    assert detector.key("Where's it? I can't see it") == "where is it i cannot see it"
    assert detector.observe("How do I reset my router?") == 1
    assert detector.observe("how do I reset my password") == 1  # not the same question
    assert detector.observe("yes") == 0  # too short to be a question
    assert detector.observe("Can you tell me how I reset my router?") == 2
    # A complaint that shares a few words with an open question is not that question again.
    assert detector.observe("This is absolutely ridiculous, where are you all?") == 1
    assert detector.observe("where is my order") == 1


# ---------------------------------------------------------------------------- sentiment

# language -> (negated, strongly negative x2, very strong, neutral)
SENTIMENT: dict[str, tuple[str, list[str], str, str]] = {
    "en": (
        "not terrible, not the worst",
        ["I am so angry", "This is absolutely ridiculous, you are useless!"],
        "I hate this, it is a complete waste of time, worst company ever!!",
        "where is my order",
    ),
    "fr": (
        "Ce n'est pas horrible, ce n'est pas le pire.",
        ["Je suis vraiment furieux", "C'est absolument scandaleux, vous êtes complètement nuls !"],
        "C'est horrible, je déteste ce service, c'est le pire, une vraie catastrophe !!",
        "Où est ma commande ?",
    ),
    "de": (
        "nicht schrecklich, nicht das schlimmste",
        ["Ich bin wirklich wütend", "Das ist absolut lächerlich, Sie sind völlig nutzlos!"],
        "Ich hasse das, schrecklich, eine totale Katastrophe, Zeitverschwendung!!",
        "Wo ist meine Bestellung?",
    ),
    "es": (
        "no es terrible, no es lo peor",
        ["Estoy muy enojado", "Esto es totalmente ridículo, son unos inútiles!"],
        "Odio esto, es horrible, pésimo servicio, un desastre total!!",
        "¿Dónde está mi pedido?",
    ),
    "it": (
        "non è terribile, non è il peggio",
        ["Sono davvero arrabbiato", "È assolutamente ridicolo, siete completamente inutili!"],
        "Odio questo servizio, è orribile, pessimo, un disastro totale!!",
        "Dov'è il mio ordine?",
    ),
    "pt": (
        "não é terrível, não é o pior",
        ["Estou muito irritado", "Isso é totalmente ridículo, vocês são uns inúteis!"],
        "Odeio isso, é horrível, péssimo serviço, um desastre total!!",
        "Cadê meu pedido?",
    ),
}


BOOSTED = {
    "en": {"so"},
    "fr": {"vraiment"},
    "de": {"wirklich"},
    "es": {"muy"},
    "it": {"davvero"},
    "pt": {"muito"},
}


@pytest.mark.parametrize("language", SHIPPED_LANGUAGES)
def test_sentiment_handles_negation_and_intensity(language: str) -> None:
    negated, strong, severe, neutral = SENTIMENT[language]
    # Negation flips, it does not add up: "not terrible, not the worst" is not an upset caller.
    assert sentiment_score(negated, language) > 0
    detector = SentimentDetector(language)
    assert not detector.observe(negated) and not detector.observe(negated)
    assert not detector.observe(neutral)
    # Two strongly negative utterances escalate; the first alone does not.
    assert not detector.observe(strong[0])
    assert detector.observe(strong[1])
    # One very strong utterance escalates on its own.
    assert SentimentDetector(language).observe(severe)
    # The intensifier (the locale's booster word in strong[0]) makes it stronger.
    plain = " ".join(w for w in strong[0].split() if w.lower() not in BOOSTED[language])
    assert sentiment_score(strong[0], language) < sentiment_score(plain, language) < 0


def test_intensity_and_the_threshold_setting() -> None:
    assert sentiment_score("I am extremely angry") < sentiment_score("I am angry") < 0
    assert sentiment_score("Je suis très furieux", "fr") < sentiment_score("Je suis furieux", "fr")
    # The threshold decides what counts as strong.
    lenient = SentimentDetector("en", threshold=-0.9)
    assert not lenient.observe("I am so angry") and not lenient.observe("I am so angry")
    strict = SentimentDetector("en", threshold=-0.3)
    assert not strict.observe("this is terrible") and strict.observe("that was bad")


def test_confidence_counter_escalates_on_the_second_failure() -> None:
    counter = ConfidenceCounter()
    assert not counter.failed("no data on that tariff")
    assert counter.failed("cannot change a contract")
    assert counter.reasons == ["no data on that tariff", "cannot change a contract"]
    # Counted afresh after an escalation (one that could not transfer must not repeat at once).
    assert not counter.failed("no opening hours for Sunday")
    assert counter.failed("no refund rules")


def test_detectors_start_over_after_they_fire() -> None:
    sentiment = SentimentDetector("en")
    assert sentiment.observe("I hate this, it is a complete waste of time, worst company ever!!")
    assert not sentiment.observe("where is my order")
    assert not sentiment.observe("I am so angry")  # the first strong one of a new count
    repeats = RepeatDetector(LocaleTexts.for_locale("en"))
    for times in (1, 2, 3):
        assert repeats.observe("where is my order") == times
    repeats.forget("where's my order")
    assert repeats.observe("where is my order") == 1


def test_the_threshold_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from voxpipe.config.settings import VoxpipeSettings

    assert VoxpipeSettings(_env_file=None).escalation_sentiment_threshold == -0.5  # type: ignore[call-arg]
    monkeypatch.setenv("ESCALATION_SENTIMENT_THRESHOLD", "-0.7")
    assert VoxpipeSettings(_env_file=None).escalation_sentiment_threshold == -0.7  # type: ignore[call-arg]
    monkeypatch.setenv("ESCALATION_SENTIMENT_THRESHOLD", "0.5")  # positive: not negative at all
    with pytest.raises(ValidationError, match="escalation_sentiment_threshold"):
        VoxpipeSettings(_env_file=None)  # type: ignore[call-arg]
