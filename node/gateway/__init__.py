"""The SMS gateway (``silbato gateway``): the block's text lists and hotline, through Gammu's ``gammu-smsd``.

Like the page, it is a door to the outside with its own user: it reads alerts from the store
and writes captains' requests (a responder's texted REPORT or CONFIRM) for the daemon to sign,
its own lists, queue and tips (``node.store.GATEWAY_TABLES``). It imports no radio, hardware
or daemon code and holds no node key.

- ``segments``: how many SMS a text costs (GSM-7 or UCS-2);
- ``texts``: the words of each text, in the subscriber's language (the one message catalog);
- ``commands``: what an incoming text asks (REPORT, CONFIRM, JOIN, STOP, ...), pure;
- ``vault``: the key that encrypts phone numbers, from the operators' passphrase;
- ``spool``: gammu-smsd's files backend (its inbox, outbox, sent and error folders);
- ``book``: the gateway's tables (subscribers, queue, tips, state);
- ``service``: the loop that plans, hands off, reconciles and answers.
"""
